"""Fixtures of the Triton / KServe v2 rules (REST through HttpSession, gRPC through GrpcSession)."""

from __future__ import annotations

import random

from inspector.lab.craft import Capture
from inspector.lab.rulecaps.fixture import ADMIN, ADMIN_NET, OUTSIDE, SERVER_IP, Fixture
from inspector.lab.traffic_http import GrpcSession, HttpSession, json_response
from inspector.lab.traffic_triton import (
    LOG_SETTINGS_ANSWER,
    TRACE_SETTINGS_ANSWER,
    Tensor,
    grpc_infer,
    grpc_log_settings,
    grpc_model_load,
    grpc_model_ready,
    grpc_trace_setting,
    rest_error,
    rest_infer,
    rest_infer_response,
    rest_logging,
    rest_model_load,
    rest_shm_register,
    rest_trace_setting,
)

ADMIN_CONFIG = {"ADMIN_NETS": [ADMIN_NET]}
RATE_CONFIG = {"INFERENCE_RATE_COUNT": 20, "INFERENCE_RATE_WINDOW": "10s"}
OK = json_response({})
PYTHON_CONFIG = {"name": "custom", "backend": "python", "max_batch_size": 8,
                 "input": [{"name": "INPUT0", "data_type": "TYPE_FP32", "dims": [4]}],
                 "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [4]}]}
MODEL_PY = b"import os\n\nclass TritonPythonModel:\n    def initialize(self, args):\n        os.system('id')\n"
SMALL = [Tensor(name="INPUT0", shape=(1, 4))]


def _rest(cap: Capture, rng: random.Random, client: str = OUTSIDE, start_offset: float = 0.0) -> HttpSession:
    return HttpSession(cap, rng, client, SERVER_IP, 8000, start=1_767_225_600.0 + start_offset)


def _grpc(cap: Capture, rng: random.Random, client: str = OUTSIDE, start_offset: float = 0.5) -> GrpcSession:
    return GrpcSession(cap, rng, client, SERVER_IP, 8001, start=1_767_225_600.0 + start_offset)


def _management(cap: Capture, rng: random.Random, attack: bool) -> None:
    """Outside: write a log setting (REST) and unload a model (gRPC) - or, the near miss, only read
    the settings and check a model, while the admin host makes the changes."""
    rest = _rest(cap, rng)
    if attack:
        rest.exchange(rest_logging({"log_verbose_level": 1}), json_response(LOG_SETTINGS_ANSWER))
    else:
        rest.exchange(rest_logging(None), json_response(LOG_SETTINGS_ANSWER))
    rest.close()
    grpc = _grpc(cap, rng)
    grpc.call(grpc_model_load("resnet") if attack else grpc_model_ready("resnet"))
    grpc.call(grpc_log_settings({}))  # a read: no settings sent
    grpc.close()
    if not attack:
        admin = _rest(cap, rng, ADMIN, 1.0)
        admin.exchange(rest_logging({"log_verbose_level": 1}), json_response(LOG_SETTINGS_ANSWER))
        admin.close()
        admin_grpc = _grpc(cap, rng, ADMIN, 1.5)
        admin_grpc.call(grpc_model_load("resnet"))
        admin_grpc.close()


def _inference(cap: Capture, rng: random.Random, one_model: bool) -> None:
    """25 gRPC ModelInfer calls 0.1 s apart from one client (to one model, or alternating two),
    and 25 REST infer calls from a second client (likewise)."""
    grpc = _grpc(cap, rng, OUTSIDE, 0.0)
    for n in range(25):
        model = "resnet" if one_model or n % 2 else "bert"
        grpc.call(grpc_infer(model, SMALL, request_id=str(n)))
        grpc.wait(0.1)
    grpc.close()
    rest = HttpSession(cap, rng, "198.51.100.24", SERVER_IP, 8000, start=1_767_225_600.0)
    for n in range(25):
        model = "fraud" if one_model or n % 2 else "churn"
        rest.exchange(rest_infer(model, SMALL), rest_infer_response(model, [Tensor(name="OUTPUT0", shape=(1, 2))]))
        rest.wait(0.1)
    rest.close()


def _log_file(cap: Capture, rng: random.Random, attack: bool) -> None:
    rest = _rest(cap, rng)
    settings = {"log_file": "/root/.bashrc", "log_info": True} if attack else {"log_verbose_level": 1}
    rest.exchange(rest_logging(settings), json_response(LOG_SETTINGS_ANSWER))
    rest.close()
    grpc = _grpc(cap, rng)
    grpc.call(grpc_log_settings({"log_file": "/etc/cron.d/triton"} if attack else {"log_file": ""}))
    grpc.close()


def _trace_file(cap: Capture, rng: random.Random, attack: bool) -> None:
    rest = _rest(cap, rng)
    settings = ({"trace_file": "/root/.ssh/authorized_keys", "trace_level": ["TIMESTAMPS"]} if attack
                else {"trace_rate": "100", "trace_level": ["TIMESTAMPS"]})
    rest.exchange(rest_trace_setting(settings, model="resnet"), json_response(TRACE_SETTINGS_ANSWER))
    rest.close()
    grpc = _grpc(cap, rng)
    grpc.call(grpc_trace_setting({"trace_file": ["/etc/ld.so.preload"]} if attack else {"trace_count": ["10"]}))
    grpc.close()


def _shm_offset(cap: Capture, rng: random.Random, attack: bool) -> None:
    """Register a region at offset 2^64-32 (REST) and infer from offset -32 (gRPC); the near miss
    uses offsets 0 and 16."""
    offset = (1 << 64) - 32 if attack else 0
    rest = _rest(cap, rng)
    rest.exchange(rest_shm_register("input0", "/input_shm", offset, 64),
                  rest_error("failed to register shared memory region") if attack else OK)
    rest.close()
    grpc = _grpc(cap, rng)
    tensor = Tensor(name="INPUT0", shape=(1, 4), shm=("input0", (1 << 64) - 32 if attack else 16, 16))
    grpc.call(grpc_infer("resnet", [tensor], error="shared memory region out of bounds" if attack else ""))
    grpc.close()


def _model_load(cap: Capture, rng: random.Random, attack: bool) -> None:
    files = {"1/model.py": MODEL_PY} if attack else None
    rest = _rest(cap, rng)
    rest.exchange(rest_model_load("custom", config=PYTHON_CONFIG, files=files), OK)
    rest.close()
    grpc = _grpc(cap, rng)
    grpc.call(grpc_model_load("custom", config=PYTHON_CONFIG, files=files))
    grpc.close()


def _declaration(cap: Capture, rng: random.Random, attack: bool) -> None:
    """A [1024, 1024] FP32 input declared with 4 values sent (REST and gRPC); the near miss declares [2, 2]."""
    shape = (1024, 1024) if attack else (2, 2)
    tensor = Tensor(name="INPUT0", shape=shape, sent_elements=4)
    rest = _rest(cap, rng)
    rest.exchange(rest_infer("resnet", [tensor]),
                  rest_error("unexpected shape for input 'INPUT0'") if attack else
                  rest_infer_response("resnet", [Tensor(name="OUTPUT0", shape=(2, 2))]))
    rest.close()
    grpc = _grpc(cap, rng)
    grpc.call(grpc_infer("resnet", [tensor], error="unexpected total byte size" if attack else ""))
    grpc.close()


def _oversized(cap: Capture, rng: random.Random, elements: int) -> None:
    """An honest REST infer with an input of `elements` values (the fixture caps them at 1000)."""
    rest = _rest(cap, rng)
    rest.exchange(rest_infer("resnet", [Tensor(name="INPUT0", shape=(1, elements))]),
                  rest_infer_response("resnet", [Tensor(name="OUTPUT0", shape=(1, 2))]))
    rest.close()


FIXTURES: dict[str, Fixture] = {
    "triton_management_outside_admin": Fixture(
        sid=3100001, positive=lambda c, r: _management(c, r, True), negative=lambda c, r: _management(c, r, False),
        parsed=("triton", 3, 5), positive_count=2, config=ADMIN_CONFIG,
        notes="From outside ADMIN_NETS: POST /v2/logging setting log_verbose_level (REST) and "
              "RepositoryModelLoad (gRPC); the near miss only reads (GET /v2/logging, ModelReady, an empty "
              "LogSettings) while the admin host makes the same changes."),
    "triton_inference_rate": Fixture(
        sid=3100003, positive=lambda c, r: _inference(c, r, True), negative=lambda c, r: _inference(c, r, False),
        parsed=("triton", 50, 50), positive_count=2, config=RATE_CONFIG,
        notes="Two clients, one over gRPC and one over REST, each sending 25 inferences 0.1 s apart to one "
              "model (count 20 in 10 s, per client and model); in the near miss each client alternates "
              "between two models (13 and 12 calls each). tests/rules/test_rate_ladder.py reuses the positive."),
    "triton_log_file_redirect": Fixture(
        sid=3100005, positive=lambda c, r: _log_file(c, r, True), negative=lambda c, r: _log_file(c, r, False),
        parsed=("triton", 2, 2), positive_count=2,
        notes="log_file set to /root/.bashrc (REST) and /etc/cron.d/triton (gRPC LogSettings); the near miss "
              "changes the verbosity and resets log_file to the empty string."),
    "triton_trace_file_write": Fixture(
        sid=3100006, positive=lambda c, r: _trace_file(c, r, True), negative=lambda c, r: _trace_file(c, r, False),
        parsed=("triton", 2, 2), positive_count=2,
        notes="trace_file set for a model (REST) and globally (gRPC TraceSetting); the near miss changes "
              "trace_rate, trace_level and trace_count only."),
    "triton_shm_offset_abuse": Fixture(
        sid=3100007, positive=lambda c, r: _shm_offset(c, r, True), negative=lambda c, r: _shm_offset(c, r, False),
        parsed=("triton", 2, 2), positive_count=2,
        notes="A region registered at offset 18446744073709551584 (REST) and an input read from offset -32 "
              "(gRPC int64 parameter); the near miss uses offsets 0 and 16."),
    "triton_model_load_file_override": Fixture(
        sid=3100008, positive=lambda c, r: _model_load(c, r, True), negative=lambda c, r: _model_load(c, r, False),
        parsed=("triton", 2, 2), positive_count=2,
        notes="A python-backend config with file:1/model.py, over REST (base64) and gRPC (bytes_param); the near "
              "miss loads the same config with no files."),
    "triton_tensor_declaration_mismatch": Fixture(
        sid=3100009, positive=lambda c, r: _declaration(c, r, True), negative=lambda c, r: _declaration(c, r, False),
        parsed=("triton", 2, 2), positive_count=2,
        notes="An FP32 input declared [1024, 1024] carrying 4 values, over REST and gRPC; the near miss "
              "declares [2, 2] for the same 4 values."),
    "triton_tensor_oversized": Fixture(
        sid=3100010, positive=lambda c, r: _oversized(c, r, 1024), negative=lambda c, r: _oversized(c, r, 1000),
        parsed=("triton", 1, 1), config={"MAX_TENSOR_ELEMENTS": 1000},
        notes="An honest REST infer with 1024 values against MAX_TENSOR_ELEMENTS 1000; the near miss sends 1000."),
}
