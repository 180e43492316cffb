"""Ray dashboard traffic (port 8265): the Jobs REST API and the dashboard's profiling endpoints.

`submit_job` posts what `ray job submit` / `JobSubmissionClient.submit_job` sends (entrypoint,
runtime_env, metadata); `cpu_profile` is the dashboard's py-spy endpoint whose query values
CVE-2023-6019 put on a shell command line.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from inspector.lab.traffic_http import json_request, json_response, request_bytes, response_bytes

HOST = "ray-head:8265"


def submit_job(entrypoint: str, *, submission_id: str = "", runtime_env: dict[str, Any] | None = None,
               metadata: dict[str, str] | None = None, host: str = HOST) -> bytes:
    body: dict[str, Any] = {"entrypoint": entrypoint, "runtime_env": runtime_env or {},
                            "metadata": metadata or {}}
    if submission_id:
        body["submission_id"] = submission_id
    return json_request("POST", "/api/jobs/", host, body, [("User-Agent", "python-requests/2.34.2")])


def job_submitted(submission_id: str = "raysubmit_lab0000000001") -> bytes:
    return json_response({"job_id": "02000000", "submission_id": submission_id})


def cpu_profile(query: dict[str, str], *, host: str = HOST) -> bytes:
    """GET /worker/cpu_profile with the query values as given (encoded like requests does)."""
    return request_bytes("GET", "/worker/cpu_profile?" + urlencode(query), host)


def profile_answer(ok: bool = True) -> bytes:
    if ok:
        return response_bytes(200, b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "image/svg+xml")
    return response_bytes(500, b"Failed to execute: py-spy record", "text/plain; charset=utf-8")


def log_file(node_id: str, filename: str, *, host: str = HOST) -> bytes:
    """GET /api/v0/logs/file: the state API's log read (node id and file name)."""
    return request_bytes("GET", "/api/v0/logs/file?" + urlencode({"node_id": node_id, "filename": filename,
                                                                  "lines": "100"}), host)


def log_answer(text: str) -> bytes:
    return response_bytes(200, text.encode(), "text/plain")
