"""MLflow tracking-server traffic: the REST API (`/api/2.0/mlflow/...`) and artifact downloads.

Request bodies are the ones `MlflowClient` posts (registered-models/create, model-versions/create,
experiments/create); `get_artifact` is the download endpoint the UI uses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from inspector.lab.traffic_http import json_request, json_response, request_bytes, response_bytes

HOST = "mlflow:5000"
API = "/api/2.0/mlflow/"


def api_post(endpoint: str, body: dict[str, Any], *, host: str = HOST) -> bytes:
    return json_request("POST", API + endpoint, host, body, [("User-Agent", "mlflow-python-client/2.9.0")])


def create_experiment(name: str, artifact_location: str | None = None, *, host: str = HOST) -> bytes:
    body: dict[str, Any] = {"name": name}
    if artifact_location is not None:
        body["artifact_location"] = artifact_location
    return api_post("experiments/create", body, host=host)


def create_model_version(name: str, source: str, run_id: str = "", *, host: str = HOST) -> bytes:
    body = {"name": name, "source": source}
    if run_id:
        body["run_id"] = run_id
    return api_post("model-versions/create", body, host=host)


def model_version_answer(name: str, source: str) -> bytes:
    return json_response({"model_version": {"name": name, "version": "1", "source": source, "status": "READY"}})


def get_artifact(path: str, run_id: str, *, host: str = HOST) -> bytes:
    return request_bytes("GET", "/get-artifact?" + urlencode({"path": path, "run_uuid": run_id}), host)


def artifact_answer(content: bytes) -> bytes:
    return response_bytes(200, content, "text/plain")


def experiment_answer(experiment_id: str = "1") -> bytes:
    return json_response({"experiment_id": experiment_id})


def create_registered_model(name: str, *, host: str = HOST) -> bytes:
    return api_post("registered-models/create", {"name": name}, host=host)


def registered_model_answer(name: str) -> bytes:
    return json_response({"registered_model": {"name": name, "creation_timestamp": 1767225600000}})


def get_model_version_artifact(path: str, name: str, version: str, *, host: str = HOST) -> bytes:
    """GET /model-versions/get-artifact: a file of a registered model version (the UI's download)."""
    return request_bytes("GET", "/model-versions/get-artifact?" + urlencode({"path": path, "name": name,
                                                                            "version": version}), host)


def create_run(experiment_id: str, run_name: str, *, host: str = HOST) -> bytes:
    return api_post("runs/create", {"experiment_id": experiment_id, "run_name": run_name,
                                    "start_time": 1767225600000}, host=host)


def run_answer(run_id: str, experiment_id: str) -> bytes:
    return json_response({"run": {"info": {"run_id": run_id, "experiment_id": experiment_id, "status": "RUNNING",
                                           "artifact_uri": f"s3://ml-artifacts/{experiment_id}/{run_id}/artifacts"}}})


def log_metric(run_id: str, key: str, value: float, step: int, *, host: str = HOST) -> bytes:
    return api_post("runs/log-metric", {"run_id": run_id, "key": key, "value": value, "step": step,
                                        "timestamp": 1767225600000 + step}, host=host)
