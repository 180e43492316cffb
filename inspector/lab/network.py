"""The lab's network: zones, the hosts in them, the services they run, and the site files that describe them.

Every scenario and every benign session places its hosts here, so a capture's addresses mean
the same thing in all of them. Zones follow the planes of an ML cluster (docs/policy.md):

    zone           plane       CIDR            hosts
    apps           data        10.10.0.0/16    product services calling the models
    inference      data        10.20.0.0/16    Triton, vLLM, TorchServe, Ollama
    training       data        10.30.0.0/16    torchrun ranks (NCCL, TCPStore)
    feature-store  data        10.40.0.0/24    the Feast feature server
    storage        data        10.50.0.0/24    the S3-compatible model and dataset store
    mlops          control     10.60.0.0/24    MLflow, the Ray head, notebooks
    management     management  10.99.0.0/24    the admin bastion and the CI/CD pipeline
    outside        -           everything else (TEST-NET ranges: clients, attackers, registries)

:func:`policy_yaml` renders the segmentation policy of that plan (the flows the benign traffic
makes, default deny) and :func:`site_yaml` the rules' site config (admin, training, pipeline and
job-submitter networks, approved buckets and model sources, the lab's thresholds).
`inspector lab generate` writes both beside every capture, so `inspector analyze --config site.yaml
--policy policy.yaml` reads a lab capture as the site it was made in.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from functools import cache

from inspector.lab.traffic_s3 import S3Identity


@dataclass(frozen=True, kw_only=True)
class Zone:
    name: str
    plane: str
    cidr: str
    description: str


ZONES: tuple[Zone, ...] = (
    Zone(name="apps", plane="data", cidr="10.10.0.0/16", description="product services calling the models"),
    Zone(name="inference", plane="data", cidr="10.20.0.0/16",
         description="model servers: Triton, vLLM, TorchServe, Ollama"),
    Zone(name="training", plane="data", cidr="10.30.0.0/16",
         description="GPU nodes running torchrun jobs (NCCL, TCPStore rendezvous)"),
    Zone(name="feature-store", plane="data", cidr="10.40.0.0/24", description="the Feast feature server"),
    Zone(name="storage", plane="data", cidr="10.50.0.0/24",
         description="S3-compatible model and dataset store"),
    Zone(name="mlops", plane="control", cidr="10.60.0.0/24",
         description="MLflow tracking server, Ray head, data-science notebooks"),
    Zone(name="management", plane="management", cidr="10.99.0.0/24",
         description="admin bastion and the CI/CD model pipeline"),
)
OUTSIDE = "outside"

# -- hosts ------------------------------------------------------------------------------------

# apps
WEB_FRONTEND = "10.10.1.20"
FRAUD_SERVICE = "10.10.2.40"
CHAT_APP = "10.10.3.30"
COMPROMISED_APP = "10.10.2.66"  # an app pod an attacker controls
# inference
TRITON = "10.20.0.5"
VLLM = "10.20.0.6"
TORCHSERVE = "10.20.0.7"
OLLAMA = "10.20.0.8"
COMPROMISED_INFERENCE = "10.20.0.99"  # an inference pod an attacker controls
# training
RANK0, RANK1, RANK2, RANK3 = "10.30.0.10", "10.30.0.11", "10.30.0.12", "10.30.0.13"
# feature store, storage, mlops
FEAST = "10.40.0.5"
S3 = "10.50.0.10"
MLFLOW = "10.60.0.5"
RAY_HEAD = "10.60.0.6"
NOTEBOOK = "10.60.0.20"
# management
ADMIN = "10.99.0.5"
PIPELINE = "10.99.0.7"
# outside
PUBLIC_CLIENT = "198.51.100.23"
PUBLIC_CLIENT_2 = "198.51.100.24"
ATTACKER = "203.0.113.66"
PUBLIC_REGISTRY = "198.51.100.80"  # registry.ollama.ai's address in the lab

# -- services (port numbers of the real products) ---------------------------------------------

TRITON_HTTP, TRITON_GRPC = 8000, 8001
VLLM_PORT = 8000
TORCHSERVE_INFERENCE, TORCHSERVE_MANAGEMENT = 8080, 8081
OLLAMA_PORT = 11434
FEAST_PORT = 6566
S3_PORT = 80
MLFLOW_PORT = 5000
RAY_DASHBOARD = 8265
TCPSTORE_PORT = 29500
NCCL_BOOTSTRAP_PORT = 40001
NCCL_NET_PORT = 47001
REGISTRY_PORT = 5000

# -- S3 identities ----------------------------------------------------------------------------

PIPELINE_KEY = S3Identity(access_key="AKIALABPIPELINE00001")  # CI/CD: the only model writer
TRAINING_KEY = S3Identity(access_key="AKIALABTRAINING00001")  # training jobs: datasets, checkpoints
SERVING_KEY = S3Identity(access_key="AKIALABSERVING000001")  # model servers: read-only pulls
DEVELOPER_KEY = S3Identity(access_key="AKIALABDEVELOPER0001")  # a data scientist's key (stolen in the lab)
MODELS_BUCKET = "ml-models-prod"
DATASETS_BUCKET = "ml-datasets"
APPROVED_MODEL_SOURCE = "models.internal.example"

#: The lab's thresholds (site values that differ from the shipped defaults): low enough that the
#: scenarios' extraction runs (minutes, not hours) cross them, high enough that no benign client does.
THRESHOLDS = {
    "INFERENCE_RATE_COUNT": 100, "INFERENCE_RATE_WINDOW": "60s",
    "LLM_LOGPROB_RATE_COUNT": 30, "LLM_LOGPROB_RATE_WINDOW": "60s",
    "FEATURE_LOOKUP_RATE_COUNT": 50, "FEATURE_LOOKUP_RATE_WINDOW": "60s",
}


@cache
def _networks() -> tuple[tuple[ipaddress.IPv4Network, str], ...]:
    return tuple((ipaddress.ip_network(zone.cidr), zone.name) for zone in ZONES)


def zone_of(address: str) -> str:
    """The lab zone of an address (`outside` when no zone holds it)."""
    ip = ipaddress.ip_address(address)
    for network, name in _networks():
        if ip in network:
            return name
    return OUTSIDE


def zone(name: str) -> Zone:
    return next(z for z in ZONES if z.name == name)


# -- the site files -----------------------------------------------------------------------------

#: (name, from, to, protocols, ports): the flows the benign traffic makes; everything else is denied.
POLICY_RULES: tuple[tuple[str, str, str, tuple[str, ...], tuple[int, ...]], ...] = (
    ("training-collectives", "training", "training", ("nccl", "tcpstore"), ()),
    ("training-reads-and-checkpoints", "training", "storage", ("s3",), ()),
    ("training-reports-to-mlops", "training", "mlops", ("mlflow",), ()),
    ("inference-pulls-models", "inference", "storage", ("s3",), ()),
    ("inference-reads-features", "inference", "feature-store", ("feast",), ()),
    ("apps-call-models", "apps", "inference", ("triton", "llm", "ollama", "torchserve"),
     (TRITON_HTTP, TRITON_GRPC, TORCHSERVE_INFERENCE, OLLAMA_PORT)),
    ("public-inference-api", OUTSIDE, "inference", ("triton", "llm"), (TRITON_HTTP, TRITON_GRPC)),
    ("notebooks-submit-jobs", "mlops", "mlops", ("ray", "mlflow"), ()),
    ("pipeline-publishes", "management", "storage", ("s3",), ()),
    ("pipeline-pushes-features", "management", "feature-store", ("feast",), ()),
    ("admin-manages-serving", "management", "inference", (), ()),
)


def policy_yaml() -> str:
    """The lab's segmentation policy (docs/policy.md format)."""
    lines = ["# Segmentation policy of the attack lab (inspector/lab/network.py; written by `inspector lab generate`).",
             "# The benign background traffic makes only the flows listed here; default deny.",
             "name: ml-lab", "description: The attack lab's ML cluster", "default: deny", "unknown_zone: outside",
             "zones:"]
    for z in ZONES:
        lines += [f"  - name: {z.name}", f"    plane: {z.plane}", f"    cidrs: [{z.cidr}]",
                  f"    description: {json.dumps(z.description)}"]
    lines.append("rules:")
    for name, source, dest, protocols, ports in POLICY_RULES:
        lines += [f"  - name: {name}", f"    from: {source}", f"    to: {dest}"]
        if protocols:
            lines.append(f"    protocols: [{', '.join(protocols)}]")
        if ports:
            lines.append(f"    ports: [{', '.join(map(str, ports))}]")
    return "\n".join(lines) + "\n"


def site_yaml() -> str:
    """The lab's site config for the rules (inspector/data/default-config.yaml documents each variable)."""
    values = {
        "ADMIN_NETS": [zone("management").cidr],
        "TRAINING_NETS": [zone("training").cidr],
        "APPROVED_BUCKETS": [MODELS_BUCKET, DATASETS_BUCKET],
        "APPROVED_MODEL_SOURCES": [APPROVED_MODEL_SOURCE, "registry.ollama.ai", "huggingface.co"],
        "PIPELINE_ACCESS_KEYS": [PIPELINE_KEY.access_key, TRAINING_KEY.access_key],
        "FEATURE_PUSH_NETS": [zone("management").cidr],
        "JOB_SUBMITTER_NETS": [zone("mlops").cidr],
        **THRESHOLDS,
    }
    lines = ["# Site config of the attack lab (inspector/lab/network.py; written by `inspector lab generate`):",
             "# its networks, buckets, pipeline keys and model sources, and thresholds sized for short scenarios.",
             "vars:"]
    for name, value in values.items():
        if isinstance(value, list):
            lines.append(f"  {name}: [{', '.join(value)}]")
        else:
            lines.append(f"  {name}: {value}")
    return "\n".join(lines) + "\n"
