"""Benign background traffic: ordinary sessions of every protocol, from the zones where they belong.

Each kind is one session a healthy ML cluster makes all day: an application scoring with Triton
(REST and gRPC), a chat app and a public client calling vLLM, Ollama and TorchServe inference,
model servers pulling weights, the pipeline publishing models and pushing features, training
ranks meeting in the TCPStore and opening NCCL sockets, training jobs reading datasets and
logging to MLflow, a notebook submitting a Ray job, the admin bastion managing the servers.
Everything here is allowed by the lab policy and quiet under the lab's site config; it is what
the rules' false positives are measured on.

`benign_sessions(lab, count, start, duration)` spreads `count` sessions over the duration,
cycling through the kinds in a seeded order so that every kind appears once `count` reaches
their number.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

from inspector.lab import network as net
from inspector.lab import traffic_feast as feast
from inspector.lab import traffic_mlflow as mlflow
from inspector.lab import traffic_ollama as ollama
from inspector.lab import traffic_ray as ray
from inspector.lab import traffic_torchserve as torchserve
from inspector.lab.ncclcaps import NET_SOCKET
from inspector.lab.recorder import Lab
from inspector.lab.traffic_http import json_response, request_bytes
from inspector.lab.traffic_llm import chat_answer, chat_request
from inspector.lab.traffic_models import benign_pickle, safetensors_bytes
from inspector.lab.traffic_s3 import s3_object, s3_ok, s3_request
from inspector.lab.traffic_tcpstore import rendezvous_value
from inspector.lab.traffic_triton import (
    LOG_SETTINGS_ANSWER,
    Tensor,
    grpc_infer,
    grpc_model_ready,
    rest_infer,
    rest_infer_response,
    rest_logging,
    rest_model_load,
)

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
FRAUD_INPUT = Tensor(name="INPUT0", shape=(1, 30))
IMAGE_INPUT = Tensor(name="INPUT0", shape=(1, 3, 8, 8))
FEATURES = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate"]
QUESTIONS = ["How do I reset my card PIN?", "What are your opening hours on Saturday?",
             "Can I raise my daily transfer limit?", "Why was my payment declined?",
             "How long does an international transfer take?"]


def _pause(lab: Lab, seconds: float) -> float:
    return seconds * lab.rng.uniform(0.6, 1.4)


def _triton_rest(lab: Lab, start: float) -> None:
    session = lab.http(net.FRAUD_SERVICE, net.TRITON, net.TRITON_HTTP, start=start)
    for n in range(lab.rng.randint(2, 4)):
        if n:
            session.wait(_pause(lab, 0.8))
        session.exchange(rest_infer("fraud-detector", [FRAUD_INPUT], request_id=f"txn-{lab.rng.randrange(10**6)}"),
                         rest_infer_response("fraud-detector", [Tensor(name="OUTPUT0", shape=(1, 2))]),
                         event="triton", what="REST infer fraud-detector")
    session.close()


def _triton_grpc(lab: Lab, start: float) -> None:
    session = lab.grpc(net.WEB_FRONTEND, net.TRITON, net.TRITON_GRPC, start=start)
    session.call(grpc_model_ready("resnet50"), event="triton", what="ModelReady resnet50")
    for _ in range(lab.rng.randint(2, 5)):
        session.wait(_pause(lab, 0.5))
        session.call(grpc_infer("resnet50", [IMAGE_INPUT], [Tensor(name="OUTPUT0", shape=(1, 10))]), event="triton",
                     what="ModelInfer resnet50")
    session.close()


def _public_chat(lab: Lab, start: float) -> None:
    session = lab.http(net.PUBLIC_CLIENT_2, net.VLLM, net.VLLM_PORT, start=start, think=0.3)
    session.exchange(chat_request(MODEL, [{"role": "user", "content": lab.rng.choice(QUESTIONS)}], max_tokens=128),
                     chat_answer(MODEL, "You can do that in the app under Settings, then Cards."), event="llm",
                     what="public chat completion")
    session.close()


def _app_chat(lab: Lab, start: float) -> None:
    session = lab.http(net.CHAT_APP, net.VLLM, net.VLLM_PORT, start=start, think=0.4)
    system = {"role": "system", "content": "You are the support assistant of Example Bank."}
    for n in range(lab.rng.randint(1, 3)):
        if n:
            session.wait(_pause(lab, 3.0))
        session.exchange(chat_request(MODEL, [system, {"role": "user", "content": lab.rng.choice(QUESTIONS)}],
                                      temperature=0.2),
                         chat_answer(MODEL, "Our branches open from 9:00 to 13:00 on Saturdays."), event="llm",
                         what="chat app completion")
    session.close()


def _ollama_generate(lab: Lab, start: float) -> None:
    session = lab.http(net.WEB_FRONTEND, net.OLLAMA, net.OLLAMA_PORT, start=start, think=0.5)
    session.exchange(ollama.generate("llama3.2:1b", "Write a one-line product description for a travel mug."),
                     ollama.generate_answer("llama3.2:1b", "Keeps coffee hot from the first meeting to the last."),
                     event="llm", what="Ollama generate")
    session.close()


def _torchserve_predict(lab: Lab, start: float) -> None:
    session = lab.http(net.FRAUD_SERVICE, net.TORCHSERVE, net.TORCHSERVE_INFERENCE, start=start, think=0.02)
    body = b'{"data": [0.12, 0.5, 0.33, 0.9]}'
    session.exchange(request_bytes("POST", "/predictions/risk-scorer", "torchserve:8080",
                                   [("Content-Type", "application/json")], body),
                     json_response({"score": 0.07}), event="torchserve", what="TorchServe predict risk-scorer")
    session.close()


def _model_pull(lab: Lab, start: float) -> None:
    session = lab.http(net.TRITON, net.S3, net.S3_PORT, start=start, think=0.004)
    for key, body in (("resnet50/1/config.json", b'{"architecture": "resnet50"}'),
                      ("resnet50/1/model.safetensors", safetensors_bytes())):
        session.exchange(s3_request("GET", net.MODELS_BUCKET, key, identity=net.SERVING_KEY), s3_object(body),
                         event="s3", what=f"GetObject {net.MODELS_BUCKET}/{key} (serving key)")
    session.close()


def _model_publish(lab: Lab, start: float) -> None:
    session = lab.http(net.PIPELINE, net.S3, net.S3_PORT, start=start, think=0.01)
    version = lab.rng.randint(8, 30)
    for key, body in ((f"fraud-detector/v{version}/model.safetensors", safetensors_bytes()),
                      (f"churn/v{version}/model.pkl", benign_pickle())):
        session.exchange(s3_request("PUT", net.MODELS_BUCKET, key, body=body, identity=net.PIPELINE_KEY),
                         s3_ok(seed=key), event="s3", what=f"PutObject {net.MODELS_BUCKET}/{key} (pipeline key)")
    session.close()


def _training_data(lab: Lab, start: float) -> None:
    rank = lab.rng.choice([net.RANK0, net.RANK1, net.RANK2, net.RANK3])
    session = lab.http(rank, net.S3, net.S3_PORT, start=start, think=0.006)
    shard = lab.rng.randrange(64)
    session.exchange(s3_request("GET", net.DATASETS_BUCKET, f"churn/part-{shard:04d}.csv", identity=net.TRAINING_KEY),
                     s3_object(b"customer_id,tenure,churned\n1001,14,0\n1002,3,1\n", content_type="text/csv"),
                     event="s3", what=f"GetObject {net.DATASETS_BUCKET}/churn/part-{shard:04d}.csv (training key)")
    session.exchange(s3_request("PUT", net.MODELS_BUCKET, f"checkpoints/job42/step-{shard * 100}.safetensors",
                                body=safetensors_bytes(), identity=net.TRAINING_KEY),
                     s3_ok(seed=f"ckpt{shard}"), event="s3", what="PutObject of a checkpoint (training key)")
    session.close()


def _feature_lookup(lab: Lab, start: float) -> None:
    session = lab.http(net.TRITON, net.FEAST, net.FEAST_PORT, start=start, think=0.003)
    for n in range(lab.rng.randint(1, 3)):
        if n:
            session.wait(_pause(lab, 1.0))
        keys = sorted(lab.rng.sample(range(1001, 9000), 3))
        session.exchange(feast.get_online_features("driver_id", keys, FEATURES),
                         feast.online_features_answer("driver_id", keys, FEATURES), event="feast",
                         what="get-online-features for 3 drivers")
    session.close()


def _feature_push(lab: Lab, start: float) -> None:
    session = lab.http(net.PIPELINE, net.FEAST, net.FEAST_PORT, start=start, think=0.005)
    frame = {"driver_id": [1001, 1002], "conv_rate": [0.41, 0.38], "event_timestamp": ["2026-01-01T00:00:00"] * 2}
    session.exchange(feast.push("driver_stats_push_source", frame), feast.empty_answer(), event="feast",
                     what="push driver_stats_push_source")
    session.close()


def _rendezvous(lab: Lab, start: float) -> None:
    rank = lab.rng.choice([net.RANK1, net.RANK2, net.RANK3])
    store = lab.store(rank, net.RANK0, start=start)
    state = {"round": 1, "complete": True,
             "participants": {f"{net.RANK1}:1": 1, f"{net.RANK2}:1": 2, f"{net.RANK3}:1": 3}}
    store.set(f"torch.rendezvous.job42.{rank}", rendezvous_value(pickle.dumps(state, protocol=2)))
    store.get("world_size", b"4")
    store.close()


def _nccl(lab: Lab, start: float) -> None:
    rank = lab.rng.choice([1, 2, 3])
    host = [net.RANK0, net.RANK1, net.RANK2, net.RANK3][rank]
    lab.nccl_bootstrap(host, net.RANK0, net.NCCL_BOOTSTRAP_PORT, start=start,
                       magic=lab.rng.randrange(1 << 63), rank=rank, nranks=4)
    lab.nccl_handshake(host, net.RANK0, net.NCCL_NET_PORT, start=start + 0.3, socket_type=NET_SOCKET,
                       payload=bytes(8))


def _mlflow_logging(lab: Lab, start: float) -> None:
    session = lab.http(net.RANK0, net.MLFLOW, net.MLFLOW_PORT, start=start, think=0.004)
    run_id = f"{lab.rng.randrange(16**32):032x}"
    session.exchange(mlflow.create_run("3", "churn-nightly"), mlflow.run_answer(run_id, "3"), event="mlflow",
                     what="runs/create")
    for step in range(lab.rng.randint(1, 3)):
        session.wait(_pause(lab, 0.5))
        session.exchange(mlflow.log_metric(run_id, "loss", round(0.9 - 0.1 * step, 2), step), json_response({}),
                         event="mlflow", what="runs/log-metric loss")
    session.exchange(mlflow.create_model_version("churn", f"runs:/{run_id}/model", run_id),
                     mlflow.model_version_answer("churn", f"runs:/{run_id}/model"), event="mlflow",
                     what="model-versions/create from runs:/")
    session.close()


def _notebook_experiment(lab: Lab, start: float) -> None:
    session = lab.http(net.NOTEBOOK, net.MLFLOW, net.MLFLOW_PORT, start=start, think=0.004)
    name = f"churn-features-{lab.rng.randrange(100)}"
    session.exchange(mlflow.create_experiment(name, f"s3://ml-artifacts/{name}"), mlflow.experiment_answer("12"),
                     event="mlflow", what="experiments/create with an s3:// location")
    session.close()


def _ray_job(lab: Lab, start: float) -> None:
    session = lab.http(net.NOTEBOOK, net.RAY_HEAD, net.RAY_DASHBOARD, start=start, think=0.02)
    submission = f"raysubmit_{lab.rng.randrange(16**12):012x}"
    session.exchange(ray.submit_job("python train.py --epochs 3 --data s3://ml-datasets/churn",
                                    submission_id=submission, runtime_env={"working_dir": "gcs://_ray_pkg_lab.zip"}),
                     ray.job_submitted(submission), event="ray", what="Ray job submission from a notebook")
    session.wait(_pause(lab, 2.0))
    session.exchange(request_bytes("GET", f"/api/jobs/{submission}", ray.HOST),
                     json_response({"type": "SUBMISSION", "submission_id": submission, "status": "RUNNING"}),
                     event="ray", what="Ray job status")
    session.close()


def _triton_admin(lab: Lab, start: float) -> None:
    session = lab.http(net.ADMIN, net.TRITON, net.TRITON_HTTP, start=start, think=0.05)
    session.exchange(rest_logging(None), json_response(LOG_SETTINGS_ANSWER), event="triton", what="GET /v2/logging")
    config = {"name": "resnet50", "platform": "onnxruntime_onnx", "max_batch_size": 8}
    session.exchange(rest_model_load("resnet50", config=config), json_response({}), event="triton",
                     what="model load resnet50 (config only)")
    session.close()


def _torchserve_admin(lab: Lab, start: float) -> None:
    session = lab.http(net.ADMIN, net.TORCHSERVE, net.TORCHSERVE_MANAGEMENT, start=start, think=0.2)
    session.exchange(torchserve.register_model(f"https://{net.APPROVED_MODEL_SOURCE}/risk-scorer-v2.mar"),
                     torchserve.status_answer('Model "risk-scorer" Version: 2.0 registered with 0 initial workers'),
                     event="torchserve", what="register a model from the internal model host")
    session.exchange(torchserve.scale_workers("risk-scorer", 2),
                     torchserve.status_answer("Processing worker updates...", 202), event="torchserve",
                     what="scale risk-scorer to 2 workers")
    session.close()


def _ollama_admin(lab: Lab, start: float) -> None:
    session = lab.http(net.ADMIN, net.OLLAMA, net.OLLAMA_PORT, start=start, think=0.8)
    session.exchange(ollama.pull("llama3.2:1b"), ollama.pull_progress(ollama.digest(b"llama3.2:1b weights")),
                     event="ollama", what="pull llama3.2:1b from registry.ollama.ai")
    session.close()


#: The kinds of benign session: (name, builder).
KINDS: tuple[tuple[str, Callable[[Lab, float], None]], ...] = (
    ("triton-rest-inference", _triton_rest),
    ("triton-grpc-inference", _triton_grpc),
    ("public-llm-chat", _public_chat),
    ("chat-app-llm", _app_chat),
    ("ollama-generate", _ollama_generate),
    ("torchserve-predict", _torchserve_predict),
    ("model-pull", _model_pull),
    ("model-publish", _model_publish),
    ("training-data", _training_data),
    ("feature-lookup", _feature_lookup),
    ("feature-push", _feature_push),
    ("tcpstore-rendezvous", _rendezvous),
    ("nccl-connect", _nccl),
    ("mlflow-logging", _mlflow_logging),
    ("mlflow-experiment", _notebook_experiment),
    ("ray-job", _ray_job),
    ("triton-admin", _triton_admin),
    ("torchserve-admin", _torchserve_admin),
    ("ollama-admin", _ollama_admin),
)


def benign_sessions(lab: Lab, count: int, start: float, duration: float) -> None:
    """`count` benign sessions at seeded times over [start, start + duration) (the lab's label and
    generator must already be set)."""
    order = list(KINDS)
    lab.rng.shuffle(order)
    latest = max(duration - 5.0, 0.0)
    times = sorted(start + lab.rng.uniform(0.0, latest) for _ in range(count))
    for n, at in enumerate(times):
        order[n % len(order)][1](lab, at)
