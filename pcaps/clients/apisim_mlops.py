"""Protocol-shaped Feast, Ray, TorchServe, MLflow and Jupyter servers for the loopback captures.

Each answers the paths, methods and JSON shapes of the real product's API (read from the
products' sources: feast `feature_server.py`, ray `job_head.py` and the reporter module,
TorchServe's management API docs and protos, MLflow's REST API, Jupyter Server's REST API) with
fixed, deterministic content. They are not the products: nothing is stored, no file is read, no
job runs. The gRPC servers (Feast, TorchServe) use grpcio's generic handlers on raw bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from re import Match
from typing import Any

import grpc
from apisim import HOST, ApiHandler

# --- Feast ------------------------------------------------------------------------------------------


class FeastHandler(ApiHandler):
    routes = [
        ("POST", r"/get-online-features", "get_online_features"),
        ("POST", r"/retrieve-online-documents", "retrieve_online_documents"),
        ("POST", r"/push", "no_content"),
        ("POST", r"/write-to-online-store", "no_content"),
        ("POST", r"/materialize", "no_content"),
        ("POST", r"/materialize-incremental", "no_content"),
        ("POST", r"/read-document", "read_document"),
        ("POST", r"/save-document", "save_document"),
        ("GET", r"/health", "health"),
    ]

    def get_online_features(self, match: Match[str]) -> None:
        body = self.json_body()
        if not isinstance(body, dict):
            self.send_json(422, {"detail": [{"type": "json_invalid", "loc": ["body", 1],
                                             "msg": "JSON decode error", "input": {}}]})
            return
        features = body.get("features") or []
        if any(f.startswith("missing_view:") for f in features):
            detail = json.dumps({"module": "feast.errors", "class": "FeatureViewNotFoundException",
                                 "message": "Feature view missing_view does not exist"})
            self.send_json(404, detail)
            return
        entities = body.get("entities") or {}
        keys = next(iter(entities.values()), [])
        names = list(entities) + [f.split(":", 1)[-1] for f in features]
        results = [{"values": list(keys), "statuses": ["PRESENT"] * len(keys),
                    "event_timestamps": ["1970-01-01T00:00:00Z"] * len(keys)}]
        results += [{"values": [0.5 + i for i in range(len(keys))], "statuses": ["PRESENT"] * len(keys),
                     "event_timestamps": ["2026-01-01T00:00:00Z"] * len(keys)} for _ in features]
        self.send_json(200, {"metadata": {"feature_names": names}, "results": results})

    def retrieve_online_documents(self, match: Match[str]) -> None:
        body = self.json_body()
        top_k = int(body.get("top_k") or 1)
        self.send_json(200, {"metadata": {"feature_names": ["document_id", "distance"]},
                             "results": [{"values": [f"doc-{i}" for i in range(top_k)],
                                          "statuses": ["PRESENT"] * top_k},
                                         {"values": [0.1 * i for i in range(top_k)],
                                          "statuses": ["PRESENT"] * top_k}]})

    def no_content(self, match: Match[str]) -> None:
        self.json_body()
        self.send_json(200, None)

    def read_document(self, match: Match[str]) -> None:
        body = self.json_body()
        path = body.get("file_path", "")
        if path == "/etc/passwd":  # what the unchecked open() would hand back (never read here)
            self.send_json(200, {"content": "root:x:0:0:root:/root:/bin/bash\n", "file_path": path})
        else:
            self.send_json(200, {"error": f"File not found: {path}"})

    def save_document(self, match: Match[str]) -> None:
        self.json_body()
        self.send_json(200, {"error": "Invalid file path"})

    def health(self, match: Match[str]) -> None:
        self.send_bytes(200, b"", None)


def _feast_grpc_answer(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"\x08\x01"  # PushResponse / WriteToOnlineStoreResponse {status: true}; harmless elsewhere


@contextmanager
def grpc_server(services: dict[str, list[str]]) -> Iterator[int]:
    """A grpcio server answering every `/service/method` listed with a fixed message, on raw bytes."""
    handlers = []
    for service, methods in services.items():
        table = {m: grpc.unary_unary_rpc_method_handler(_feast_grpc_answer) for m in methods}
        handlers.append(grpc.method_handlers_generic_handler(service, table))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=handlers)
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None).wait(5)


def grpc_call(port: int, path: str, payload: bytes) -> bytes:
    with grpc.insecure_channel(f"{HOST}:{port}") as channel:
        return channel.unary_unary(path)(payload, timeout=10)


# --- Ray --------------------------------------------------------------------------------------------

RAY_VERSION = {"version": "4", "ray_version": "2.9.0", "ray_commit": "0123456789abcdef0123456789abcdef01234567",
               "session_name": "session_2026-01-01_00-00-00_000000_1"}


class RayHandler(ApiHandler):
    routes = [
        ("GET", r"/api/version", "version"),
        ("GET", r"/api/packages/([^/]+)/([^/]+)", "package_check"),
        ("PUT", r"/api/packages/([^/]+)/([^/]+)", "package_upload"),
        ("POST", r"/api/jobs/", "submit"),
        ("POST", r"/api/job_agent/jobs/", "submit"),
        ("GET", r"/api/jobs/", "list_jobs"),
        ("GET", r"/api/jobs/([^/]+)", "job_info"),
        ("POST", r"/api/jobs/([^/]+)/stop", "stop"),
        ("GET", r"/api/jobs/([^/]+)/logs", "logs"),
        ("DELETE", r"/api/jobs/([^/]+)", "delete"),
        ("PUT", r"/api/serve/applications/", "serve_deploy"),
        ("GET", r"/worker/cpu_profile", "cpu_profile"),
        ("GET", r"/api/v0/logs/file", "log_file"),
        ("GET", r"/api/cluster_status", "cluster_status"),
    ]
    packages: set[str] = set()

    def version(self, match: Match[str]) -> None:
        self.send_json(200, RAY_VERSION)

    def package_check(self, match: Match[str]) -> None:
        uri = f"{match.group(1)}://{match.group(2)}"
        if uri in self.packages:
            self.send_bytes(200, b"", None)
        else:
            self.send_bytes(404, f"Package {uri} does not exist".encode(), "text/plain; charset=utf-8")

    def package_upload(self, match: Match[str]) -> None:
        self.read_body()
        self.packages.add(f"{match.group(1)}://{match.group(2)}")
        self.send_bytes(200, b"", None)

    def submit(self, match: Match[str]) -> None:
        body = self.json_body()
        if not isinstance(body, dict) or not isinstance(body.get("entrypoint"), str):
            self.send_bytes(400, b"Traceback (most recent call last):\n  ...\nTypeError: __init__() missing 1 "
                            b"required positional argument: 'entrypoint'\n", "text/plain; charset=utf-8")
            return
        submission = body.get("submission_id") or "raysubmit_apisim00000001"
        self.send_json(200, {"job_id": "02000000", "submission_id": submission})

    def list_jobs(self, match: Match[str]) -> None:
        self.send_json(200, [])

    def job_info(self, match: Match[str]) -> None:
        self.send_json(200, {"type": "SUBMISSION", "job_id": "02000000", "submission_id": match.group(1),
                             "driver_info": None, "status": "RUNNING", "entrypoint": "python train.py",
                             "message": "Job is currently running.", "error_type": None,
                             "start_time": 1767225600000, "end_time": None, "metadata": {},
                             "runtime_env": {}, "driver_agent_http_address": None, "driver_node_id": None})

    def stop(self, match: Match[str]) -> None:
        self.send_json(200, {"stopped": True})

    def logs(self, match: Match[str]) -> None:
        self.send_json(200, {"logs": "epoch 1 loss 0.5\n"})

    def delete(self, match: Match[str]) -> None:
        self.send_json(200, {"deleted": True})

    def serve_deploy(self, match: Match[str]) -> None:
        self.json_body()
        self.send_bytes(200, b"", None)

    def cpu_profile(self, match: Match[str]) -> None:
        self.send_bytes(500, b"Failed to execute: py-spy record -o profile.svg --format " + self.query.encode()[:64],
                        "text/plain; charset=utf-8")

    def log_file(self, match: Match[str]) -> None:
        self.send_bytes(200, b"1\n2\n", "text/plain")

    def cluster_status(self, match: Match[str]) -> None:
        self.send_json(200, {"result": True, "msg": "Got cluster status.", "data": {"clusterStatus": None}})


# --- TorchServe -------------------------------------------------------------------------------------


class TorchServeHandler(ApiHandler):
    routes = [
        ("POST", r"/models", "register"),
        ("GET", r"/models", "list_models"),
        ("GET", r"/models/([^/]+)(?:/([^/]+))?", "describe"),
        ("PUT", r"/models/([^/]+)(?:/([^/]+))?", "scale"),
        ("DELETE", r"/models/([^/]+)(?:/([^/]+))?", "unregister"),
        ("POST", r"/workflows", "register_workflow"),
        ("POST", r"/predictions/([^/]+)(?:/([^/]+))?", "predict"),
        ("GET", r"/ping", "ping"),
    ]

    def _error(self, code: int, kind: str, message: str) -> None:
        self.send_json(code, {"code": code, "type": kind, "message": message})

    def register(self, match: Match[str]) -> None:
        self.read_body()
        params = dict(p.split("=", 1) for p in self.query.split("&") if "=" in p)
        url = params.get("url", "")
        if url.startswith("file"):
            self._error(400, "ModelException", "Given URL file:///etc/passwd does not match any allowed URL(s)")
            return
        name = params.get("model_name") or url.rsplit("/", 1)[-1].removesuffix(".mar")
        self.send_json(200, {"status": f'Model "{name}" Version: 1.0 registered with '
                                       f'{params.get("initial_workers", "0")} initial workers'})

    def list_models(self, match: Match[str]) -> None:
        self.send_json(200, {"models": [{"modelName": "squeezenet1_1",
                                         "modelUrl": "https://torchserve.pytorch.org/mar_files/squeezenet1_1.mar"}]})

    def describe(self, match: Match[str]) -> None:
        if match.group(1) != "squeezenet1_1":
            self._error(404, "ModelNotFoundException", f"Model not found: {match.group(1)}")
            return
        self.send_json(200, [{"modelName": "squeezenet1_1", "modelVersion": "1.0", "workers": []}])

    def scale(self, match: Match[str]) -> None:
        self.send_json(202, {"status": "Processing worker updates..."})

    def unregister(self, match: Match[str]) -> None:
        self.send_json(200, {"status": f'Model "{match.group(1)}" unregistered'})

    def register_workflow(self, match: Match[str]) -> None:
        self.read_body()
        self.send_json(200, {"status": 'Workflow "evil" registered'})

    def predict(self, match: Match[str]) -> None:
        self.read_body()
        self.send_json(200, {"tabby": 0.41, "tiger_cat": 0.32})

    def ping(self, match: Match[str]) -> None:
        self.send_json(200, {"status": "Healthy"})


# --- MLflow -----------------------------------------------------------------------------------------


class MlflowHandler(ApiHandler):
    routes = [
        ("POST", r"/(?:ajax-)?api/2\.0/mlflow/registered-models/create", "registered_model_create"),
        ("GET", r"/(?:ajax-)?api/2\.0/mlflow/registered-models/get", "registered_model_get"),
        ("POST", r"/(?:ajax-)?api/2\.0/mlflow/model-versions/create", "model_version_create"),
        ("POST", r"/(?:ajax-)?api/2\.0/mlflow/experiments/create", "experiment_create"),
        ("POST", r"/(?:ajax-)?api/2\.0/mlflow/runs/create", "run_create"),
        ("PUT", r"/api/2\.0/mlflow-artifacts/artifacts/(.+)", "artifact_upload"),
        ("GET", r"/model-versions/get-artifact", "get_artifact"),
        ("GET", r"/get-artifact", "get_artifact"),
    ]
    experiments: dict[str, str] = {}

    def registered_model_create(self, match: Match[str]) -> None:
        body = self.json_body()
        self.send_json(200, {"registered_model": {"name": body["name"], "creation_timestamp": 1767225600000,
                                                  "last_updated_timestamp": 1767225600000}})

    def registered_model_get(self, match: Match[str]) -> None:
        name = self.query.partition("name=")[2].split("&")[0]
        self.send_json(404, {"error_code": "RESOURCE_DOES_NOT_EXIST",
                             "message": f"Registered Model with name={name} not found"})

    def model_version_create(self, match: Match[str]) -> None:
        body = self.json_body()
        self.send_json(200, {"model_version": {"name": body["name"], "version": "1", "source": body.get("source"),
                                               "run_id": body.get("run_id", ""), "status": "READY"}})

    def experiment_create(self, match: Match[str]) -> None:
        body = self.json_body()
        experiment_id = str(len(self.experiments) + 1)
        self.experiments[experiment_id] = body.get("artifact_location", "mlflow-artifacts:/")
        self.send_json(200, {"experiment_id": experiment_id})

    def run_create(self, match: Match[str]) -> None:
        body = self.json_body()
        location = self.experiments.get(body.get("experiment_id", ""), "mlflow-artifacts:/0")
        run_id = hashlib.md5(json.dumps(body, sort_keys=True).encode()).hexdigest()
        self.send_json(200, {"run": {"info": {"run_id": run_id, "run_uuid": run_id,
                                              "experiment_id": body.get("experiment_id"),
                                              "artifact_uri": f"{location.rstrip('/')}/{run_id}/artifacts",
                                              "status": "RUNNING", "lifecycle_stage": "active"},
                                     "data": {}}})

    def artifact_upload(self, match: Match[str]) -> None:
        self.read_body()
        self.send_json(200, {})

    def get_artifact(self, match: Match[str]) -> None:
        self.send_bytes(200, b"root:x:0:0:root:/root:/bin/bash\n", "text/plain")


# --- Jupyter Server ---------------------------------------------------------------------------------

KERNEL_ID = "5f2b3c4d-0000-4000-8000-00000000abcd"
SESSION_ID = "0c1d2e3f-0000-4000-8000-00000000cafe"


class JupyterHandler(ApiHandler):
    routes = [
        ("GET", r"/api/kernels", "kernel_list"),
        ("POST", r"/api/kernels", "kernel_create"),
        ("GET", r"/api/kernels/([^/]+)/channels", "channels"),
        ("DELETE", r"/api/kernels/([^/]+)", "kernel_delete"),
        ("POST", r"/api/sessions", "session_create"),
        ("POST", r"/api/terminals", "terminal_create"),
        ("GET", r"/terminals/([^/]+)", "terminal_page"),
        ("PUT", r"/api/contents/(.+)", "contents_save"),
        ("GET", r"/api/contents(?:/(.*))?", "contents_get"),
    ]

    def _kernel(self, name: str) -> dict[str, Any]:
        return {"id": KERNEL_ID, "name": name, "last_activity": "2026-01-01T00:00:00.000000Z",
                "execution_state": "starting", "connections": 0}

    def kernel_list(self, match: Match[str]) -> None:
        self.send_json(200, [self._kernel("python3")])

    def kernel_create(self, match: Match[str]) -> None:
        body = self.json_body()
        self.send_json(201, self._kernel(body.get("name", "python3")),
                       headers=[("Location", f"/api/kernels/{KERNEL_ID}")])

    def channels(self, match: Match[str]) -> None:
        key = self.headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True

    def kernel_delete(self, match: Match[str]) -> None:
        self.send_bytes(204, b"", None)

    def session_create(self, match: Match[str]) -> None:
        body = self.json_body()
        kernel = self._kernel((body.get("kernel") or {}).get("name", "python3"))
        self.send_json(201, {"id": SESSION_ID, "path": body.get("path"), "name": body.get("name", ""),
                             "type": body.get("type", "notebook"), "kernel": kernel})

    def terminal_create(self, match: Match[str]) -> None:
        self.read_body()
        self.send_json(200, {"name": "1", "last_activity": "2026-01-01T00:00:00.000000Z"})

    def terminal_page(self, match: Match[str]) -> None:
        self.send_bytes(200, b"<!DOCTYPE HTML><html><head><title>Jupyter Server</title></head><body>"
                        b"<div id=\"terminado-container\"></div></body></html>", "text/html; charset=UTF-8")

    def contents_save(self, match: Match[str]) -> None:
        body = self.json_body()
        self.send_json(201, {"name": match.group(1).rsplit("/", 1)[-1], "path": match.group(1),
                             "type": body.get("type", "file"), "format": None, "content": None,
                             "last_modified": "2026-01-01T00:00:00.000000Z", "writable": True})

    def contents_get(self, match: Match[str]) -> None:
        self.send_json(200, {"name": "", "path": match.group(1) or "", "type": "directory", "format": "json",
                             "content": [], "writable": True})
