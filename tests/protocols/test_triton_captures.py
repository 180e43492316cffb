"""The Triton captures (pcaps/clients/triton_*.pcap, made by pcaps/clients/make_triton.py with the
real tritonclient against local servers) through the whole offline pipeline, record by record.

Also: a rule written on the triton fields fires on them (rules + engine + analyzer), and the
capture script, re-run into a temporary folder, gives the same transactions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from inspector.analyze import Analyzer
from inspector.engine import Engine
from inspector.rules import load_rules

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "pcaps" / "clients"
GRPC_PCAP = CLIENTS / "triton_grpc.pcap"
REST_PCAP = CLIENTS / "triton_rest.pcap"


def analyze(path: Path, engine: Engine | None = None) -> tuple[Analyzer, list[dict]]:
    records: list[dict] = []
    analyzer = Analyzer(records.append, engine=engine)
    analyzer.analyze_file(path)
    return analyzer, records


def triton_records(path: Path) -> list[dict]:
    return [r for r in analyze(path)[1] if "triton" in r]


def raw_int32(name: str, source: str = "raw") -> dict:
    return {"name": name, "datatype": "INT32", "shape": [1, 16], "source": source, "elements": 16,
            "bytes_declared": 64, "bytes_sent": 64}


def out(name: str, datatype: str = "INT32", shape: list[int] | None = None) -> dict:
    return {"name": name, "datatype": datatype, "shape": shape if shape is not None else [1, 16]}


def call(transport: str, api: str, operation: str, **rest) -> dict:
    return {"api": api, "operation": operation, "transport": transport, **rest}


def grpc(api: str, operation: str, **rest) -> dict:
    rest.setdefault("stream", False)
    return call("grpc", api, operation, **rest)


def rest(api: str, operation: str, **rest_) -> dict:
    rest_.setdefault("stream", False)
    return call("rest", api, operation, **rest_)


def ordered(expected: dict) -> dict:
    """The key order of a record (api, operation, transport, model, version, id, stream, ...)."""
    from inspector.protocols.triton import _KEYS
    return {key: expected[key] for key in _KEYS if key in expected}


TWO_RAW = {"input_count": 2, "inputs": [raw_int32("INPUT0"), raw_int32("INPUT1")], "input_elements": 16,
           "input_bytes_declared": 128, "input_bytes_sent": 128}
TWO_OUT = {"outputs": [out("OUTPUT0"), out("OUTPUT1")]}
LOAD = {"parameters": {"config": "<194 bytes>"}, "parameter_names": ["config"],
        "repository": {"file_overrides": ["1/model.py", "1/weights.bin"], "file_override_count": 2,
                       "file_override_bytes": 1400, "config": {"bytes": 194, "backend": "python"}}}

GRPC_EXPECTED = [
    grpc("health", "ServerLive", response={"live": True}),
    grpc("health", "ServerReady", response={"ready": True}),
    grpc("health", "ModelReady", model="simple", response={"ready": True}),
    grpc("metadata", "ServerMetadata"),
    grpc("metadata", "ModelMetadata", model="simple"),
    grpc("metadata", "ModelMetadata", model="missing", error="Request for unknown model: 'missing' is not found"),
    grpc("config", "ModelConfig", model="simple"),
    grpc("stats", "ModelStatistics", model="simple"),
    grpc("infer", "ModelInfer", model="simple", id="grpc-1", **TWO_RAW, outputs=["OUTPUT0", "OUTPUT1"],
         response=TWO_OUT),
    grpc("infer", "ModelInfer", model="simple_string", input_count=1,
         inputs=[{"name": "INPUT0", "datatype": "BYTES", "shape": [2], "source": "raw", "elements": 2,
                  "bytes_declared": 19, "bytes_sent": 19}],  # 4+5 "hello", 4+6 "triton"
         input_elements=2, input_bytes_declared=19, input_bytes_sent=19, outputs=[],
         response={"outputs": [out("OUTPUT0", "BYTES", [2])]}),
    grpc("infer", "ModelInfer", model="simple", id="grpc-gzip", **TWO_RAW, outputs=[], response=TWO_OUT),
    grpc("infer", "ModelInfer", model="large", input_count=1,
         inputs=[{"name": "INPUT0", "datatype": "FP32", "shape": [1, 76800], "source": "raw", "elements": 76800,
                  "bytes_declared": 307200, "bytes_sent": 307200}],
         input_elements=76800, input_bytes_declared=307200, input_bytes_sent=307200, outputs=[],
         response={"outputs": [out("OUTPUT0", "FP32", [1, 76800])]}),
    grpc("infer", "ModelInfer", model="simple", input_count=2,
         inputs=[{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "source": "shared_memory",
                  "elements": 16, "bytes_declared": 64, "bytes_sent": None, "shm_region": "region0",
                  "shm_byte_size": 64}, raw_int32("INPUT1")],
         input_elements=16, input_bytes_declared=128, input_bytes_sent=64, outputs=[], response=TWO_OUT),
    grpc("infer", "ModelInfer", model="bomb", id="bomb-1", input_count=1,
         inputs=[{"name": "x", "datatype": "FP32", "shape": [65536, 65536], "source": "raw",
                  "elements": 4294967296, "bytes_declared": 17179869184, "bytes_sent": 16}],
         input_elements=4294967296, input_bytes_declared=17179869184, input_bytes_sent=16, outputs=[],
         error="unexpected total byte size for input 'x'"),
    grpc("infer", "ModelInfer", model="simple_contents", input_count=2,
         inputs=[{"name": "INTS", "datatype": "INT32", "shape": [1, 4], "source": "contents", "elements": 4,
                  "bytes_declared": 16, "bytes_sent": 16},
                 {"name": "FLOATS", "datatype": "FP32", "shape": [2], "source": "contents", "elements": 2,
                  "bytes_declared": 8, "bytes_sent": 8}],
         input_elements=4, input_bytes_declared=24, input_bytes_sent=24, outputs=[],
         response={"outputs": [out("OUTPUT0", "INT32", [1, 4]), out("OUTPUT1", "FP32", [2])]}),
    grpc("infer", "ModelStreamInfer", model="simple", id="s1", stream=True, input_count=6,
         inputs=[raw_int32("INPUT0"), raw_int32("INPUT1")] * 3, input_elements=16, input_bytes_declared=384,
         input_bytes_sent=384, outputs=[], stream_messages=3, stream_responses=3,
         stream_models=["simple", "broken"], error="model 'broken' is not ready",
         response={"outputs": [out("OUTPUT0"), out("OUTPUT1")] * 2, "stream_errors": 1}),
    grpc("repository_index", "RepositoryIndex", repository={"ready": False}),
    grpc("model_load", "RepositoryModelLoad", model="custom", **LOAD),
    grpc("model_unload", "RepositoryModelUnload", model="custom", parameters={"unload_dependents": True},
         parameter_names=["unload_dependents"], repository={"unload_dependents": True}),
    grpc("log_settings", "LogSettings",
         log_settings={"log_file": "/tmp/triton.log", "log_verbose_level": 1, "log_info": True},
         setting_names=["log_file", "log_info", "log_verbose_level"]),
    grpc("log_settings", "LogSettings"),
    grpc("trace_settings", "TraceSetting", model="simple",
         trace_settings={"trace_file": "/tmp/trace.json", "trace_rate": "1", "trace_level": ["TIMESTAMPS"]},
         setting_names=["trace_file", "trace_level", "trace_rate"]),
    grpc("shm_register", "SystemSharedMemoryRegister",
         shm={"name": "region0", "key": "/input_shm", "offset": 0, "byte_size": 64}),
    grpc("shm_register", "SystemSharedMemoryRegister",
         shm={"name": "evil", "key": "/evil", "offset": 18446744073709551584, "byte_size": 64},
         error="failed to register shared memory region"),
    grpc("shm_status", "SystemSharedMemoryStatus"),
    grpc("shm_unregister", "SystemSharedMemoryUnregister", shm={"name": "region0"}),
    grpc("cuda_shm_register", "CudaSharedMemoryRegister",
         shm={"name": "cuda0", "raw_handle_bytes": 64, "device_id": 0, "byte_size": 1024},
         error="CUDA shared memory is not supported"),
]

BINARY_OUTPUT = {"parameters": {"binary_data_output": True}, "parameter_names": ["binary_data_output"]}

REST_EXPECTED = [
    rest("health", "ServerLive", response={"live": True}),
    rest("health", "ServerReady", response={"ready": True}),
    rest("health", "ModelReady", model="simple", response={"ready": True}),
    rest("metadata", "ServerMetadata"),
    rest("metadata", "ModelMetadata", model="simple"),
    rest("config", "ModelConfig", model="simple"),
    rest("stats", "ModelStatistics", model="simple"),
    rest("infer", "ModelInfer", model="simple", id="rest-json", input_count=2,
         inputs=[raw_int32("INPUT0", "json"), raw_int32("INPUT1", "json")], input_elements=16,
         input_bytes_declared=128, input_bytes_sent=128, outputs=["OUTPUT0", "OUTPUT1"], response=TWO_OUT),
    rest("infer", "ModelInfer", model="simple", id="rest-bin", binary_header_length=324, input_count=2,
         inputs=[raw_int32("INPUT0", "binary"), raw_int32("INPUT1", "binary")], input_elements=16,
         input_bytes_declared=128, input_bytes_sent=128, outputs=["OUTPUT0", "OUTPUT1"], response=TWO_OUT),
    rest("infer", "ModelInfer", model="simple_string", **BINARY_OUTPUT, binary_header_length=139, input_count=1,
         inputs=[{"name": "INPUT0", "datatype": "BYTES", "shape": [2], "source": "binary", "elements": 2,
                  "bytes_declared": 19, "bytes_sent": 19}],
         input_elements=2, input_bytes_declared=19, input_bytes_sent=19, outputs=[],
         response={"outputs": [out("OUTPUT0", "BYTES", [2])]}),
    rest("infer", "ModelInfer", model="simple", id="rest-gzip", **BINARY_OUTPUT, binary_header_length=159,
         input_count=1, inputs=[raw_int32("INPUT0", "binary")], input_elements=16, input_bytes_declared=64,
         input_bytes_sent=64, outputs=[], response={"outputs": [out("OUTPUT0")]}),
    rest("infer", "ModelInfer", model="simple", input_count=2,
         inputs=[{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "source": "shared_memory",
                  "elements": 16, "bytes_declared": 64, "bytes_sent": None, "shm_region": "region0",
                  "shm_offset": 16, "shm_byte_size": 64}, raw_int32("INPUT1", "json")],
         input_elements=16, input_bytes_declared=128, input_bytes_sent=64, outputs=["OUTPUT1"], response=TWO_OUT),
    rest("repository_index", "RepositoryIndex", repository={"ready": False}),
    rest("model_load", "RepositoryModelLoad", model="custom", **LOAD),
    rest("model_unload", "RepositoryModelUnload", model="custom", parameters={"unload_dependents": False},
         parameter_names=["unload_dependents"], repository={"unload_dependents": False}),
    rest("log_settings", "LogSettings", log_settings={"log_file": "/tmp/triton.log", "log_verbose_level": 2},
         setting_names=["log_file", "log_verbose_level"]),
    rest("log_settings", "LogSettings"),
    rest("trace_settings", "TraceSetting", model="simple",
         trace_settings={"trace_file": "/tmp/trace.json", "trace_level": ["TIMESTAMPS", "TENSORS"]},
         setting_names=["trace_file", "trace_level"]),
    rest("trace_settings", "TraceSetting", trace_settings={"trace_rate": "10"}, setting_names=["trace_rate"]),
    rest("shm_register", "SystemSharedMemoryRegister",
         shm={"name": "region0", "key": "/input_shm", "offset": 0, "byte_size": 64}),
    rest("shm_register", "SystemSharedMemoryRegister",
         shm={"name": "evil", "key": "/evil", "offset": 18446744073709551584, "byte_size": 64},
         error="failed to register shared memory region"),
    rest("shm_status", "SystemSharedMemoryStatus"),
    rest("shm_unregister", "SystemSharedMemoryUnregister", shm={"name": "region0"}),
    rest("cuda_shm_register", "CudaSharedMemoryRegister",
         shm={"name": "cuda0", "raw_handle_bytes": 64, "device_id": 0, "byte_size": 1024},
         error="CUDA shared memory is not supported"),
    rest("generate", "Generate", model="llm", parameters={"max_tokens": 8}, parameter_names=["max_tokens"],
         text_input_length=12),
    rest("generate", "GenerateStream", model="llm", stream=True, text_input_length=12, stream_responses=2),
]

#: Protobuf maps have no defined order on the wire: these lists are compared as sets.
UNORDERED = {"setting_names", "file_overrides"}


def normalized(obj: dict) -> dict:
    """`obj` with map-ordered lists sorted (and dict key order dropped) for comparison."""
    def walk(value, key=None):
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            items = [walk(v) for v in value]
            return sorted(items) if key in UNORDERED else items
        return value
    return walk(obj)


def test_grpc_capture_records_field_by_field():
    records = triton_records(GRPC_PCAP)
    assert [r["triton"]["operation"] for r in records] == [e["operation"] for e in GRPC_EXPECTED]
    for record, expected in zip(records, GRPC_EXPECTED, strict=True):
        assert record["event_type"] == "triton"
        assert record["grpc"]["service"] == "inference.GRPCInferenceService"
        assert record["grpc"]["method"] == expected["operation"]
        assert list(record["triton"]) == list(ordered(expected))
        assert normalized(record["triton"]) == normalized(expected)


def test_grpc_capture_transport_details():
    records = triton_records(GRPC_PCAP)
    gzip_call = next(r for r in records if r["triton"].get("id") == "grpc-gzip")
    assert gzip_call["grpc"]["encoding"] == "gzip" and gzip_call["grpc"]["request"]["compressed"] == 1
    large = next(r for r in records if r["triton"].get("model") == "large")
    assert large["grpc"]["request"]["bytes"] > 300 * 1024 > 256 * 1024  # past the kept prefix
    stream = next(r for r in records if r["triton"]["stream"])
    assert stream["grpc"]["request"]["messages"] == 3 and stream["grpc"]["response"]["messages"] == 3
    statuses = [r["grpc"]["status_name"] for r in records if "error" in r["triton"]]
    assert statuses == ["NOT_FOUND", "INVALID_ARGUMENT", "OK", "INVALID_ARGUMENT", "UNAVAILABLE"]


def test_grpc_capture_anomalies_and_flows():
    analyzer, records = analyze(GRPC_PCAP)
    assert analyzer.stats.files[0].error is None
    anomalies = [r["anomaly"] for r in records if r["event_type"] == "anomaly"]
    assert [(a["layer"], a["event"]) for a in anomalies] == [("triton", "triton_tensor_size_mismatch")]
    assert anomalies[0]["message"] == ("input 'x' (FP32 [65536, 65536]) declares 4294967296 elements, "
                                       "17179869184 bytes; the request carries 16 bytes")
    assert analyzer.stats.records["flow"] == 2  # tritonclient's channel and the stub's


def test_rest_capture_records_field_by_field():
    records = triton_records(REST_PCAP)
    assert [r["triton"]["operation"] for r in records] == [e["operation"] for e in REST_EXPECTED]
    for record, expected in zip(records, REST_EXPECTED, strict=True):
        assert "grpc" not in record
        # generate calls are LLM calls too: the llm layer, above triton, names the record
        assert record["event_type"] == ("llm" if expected["api"] == "generate" else "triton")
        assert list(record["triton"]) == list(ordered(expected))
        assert normalized(record["triton"]) == normalized(expected)


def test_rest_capture_has_no_anomalies():
    analyzer, records = analyze(REST_PCAP)
    assert analyzer.stats.files[0].error is None
    assert [r for r in records if r["event_type"] == "anomaly"] == []


def test_rest_capture_http_details():
    records = triton_records(REST_PCAP)
    by_id = {r["triton"].get("id"): r for r in records}
    binary = by_id["rest-bin"]["http"]
    assert {"name": "inference-header-content-length", "value": "324"} in binary["request_headers"]
    gzip_call = by_id["rest-gzip"]["http"]
    assert {"name": "content-encoding", "value": "gzip"} in gzip_call["request_headers"]
    assert [r["http"]["status"] for r in records if "error" in r["triton"]] == [400, 400]


def test_records_are_json_with_exact_big_integers():
    for path in (GRPC_PCAP, REST_PCAP):
        for record in triton_records(path):
            text = json.dumps(record)
            if record["triton"].get("shm", {}).get("name") == "evil":
                assert '"offset": 18446744073709551584' in text
                assert json.loads(text)["triton"]["shm"]["offset"] == 2**64 - 32


# --- rules over the fields -------------------------------------------------------------------

RULES = {
    "log_file.yml": """
title: Triton log file redirected
id: 0b7cbd5e-6f1f-4b0e-9d55-3f2b1f0d3a01
sid: 9100001
status: test
level: critical
event: triton
detection:
  selection:
    triton.api: log_settings
    triton.log_settings.log_file|exists: true
  condition: selection
""",
    "shm_offset.yml": """
title: Triton shared-memory offset past 2^63
id: 0b7cbd5e-6f1f-4b0e-9d55-3f2b1f0d3a02
sid: 9100002
status: test
level: high
event: triton
detection:
  selection:
    triton.shm.offset|gte: 9223372036854775808
  condition: selection
""",
    "tensor_bomb.yml": """
title: Triton input declares far more than it sends
id: 0b7cbd5e-6f1f-4b0e-9d55-3f2b1f0d3a03
sid: 9100003
status: test
level: high
event: triton
detection:
  selection:
    triton.api: infer
    triton.input_elements|gt: 100000000
  small:
    triton.input_bytes_sent|lt: 1024
  condition: selection and small
""",
    "python_override.yml": """
title: Triton model load pushing a Python model file
id: 0b7cbd5e-6f1f-4b0e-9d55-3f2b1f0d3a04
sid: 9100004
status: test
level: critical
event: triton
detection:
  selection:
    triton.api: model_load
    triton.repository.file_overrides|endswith: .py
    triton.repository.config.backend: python
  condition: selection
""",
}


@pytest.fixture(scope="module")
def ruleset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("triton_rules")
    for name, text in RULES.items():
        (folder / name).write_text(text)
    return load_rules([folder])


@pytest.mark.parametrize("path", [GRPC_PCAP, REST_PCAP], ids=["grpc", "rest"])
def test_rules_on_triton_fields_fire(ruleset, path):
    _, records = analyze(path, Engine(ruleset))
    alerts = [r for r in records if r["event_type"] == "alert"]
    fired = sorted((a["alert"]["signature_id"], a["triton"]["operation"]) for a in alerts)
    expected = [(9100001, "LogSettings"), (9100002, "SystemSharedMemoryRegister"),
                (9100004, "RepositoryModelLoad")]
    if path == GRPC_PCAP:
        expected.append((9100003, "ModelInfer"))
    assert fired == sorted(expected)
    log_alert = next(a for a in alerts if a["alert"]["signature_id"] == 9100001)
    assert log_alert["triton"]["log_settings"]["log_file"] == "/tmp/triton.log"


# --- the capture script ------------------------------------------------------------------------


def _can_capture() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "capturing on lo needs root"
    if shutil.which("tcpdump") is None:
        return "tcpdump is not installed"
    return None


def _load_script():
    spec = importlib.util.spec_from_file_location("make_triton", CLIENTS / "make_triton.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_triton"] = module
    spec.loader.exec_module(module)
    return module


def _capture_gaps(path: Path) -> int:
    """TCP gaps in a capture (bytes the capture missed, as the reassembly saw them)."""
    from inspector.analyze import Analyzer

    analyzer = Analyzer(lambda record: None)
    analyzer.analyze_file(path)
    return analyzer.stats.tcp.get("gaps", 0)


def summary(path: Path) -> list[tuple]:
    return [(r["triton"]["operation"], r["triton"].get("model"), r["triton"].get("api"),
             json.dumps(normalized({k: v for k, v in r["triton"].items() if k not in ("response",)}),
                        sort_keys=True))
            for r in triton_records(path)]


@pytest.mark.slow
def test_capture_script_reproduces_the_transactions(tmp_path):
    reason = _can_capture()
    if reason:
        pytest.skip(reason)
    script = _load_script()
    for attempt in range(3):
        # A loopback capture on a loaded machine can lose a packet, or the tail tcpdump had not
        # written when it was stopped (a last call's body): capture again. A parser that gets
        # the transactions wrong fails every attempt.
        grpc_path, rest_path = script.main(tmp_path / f"attempt{attempt}")
        if not (_capture_gaps(grpc_path) or _capture_gaps(rest_path)) and \
                summary(grpc_path) == summary(GRPC_PCAP) and summary(rest_path) == summary(REST_PCAP):
            break
    assert summary(grpc_path) == summary(GRPC_PCAP)
    assert summary(rest_path) == summary(REST_PCAP)
    assert [c[0] for c in script.GRPC_CALLS] == [e["operation"] for e in GRPC_EXPECTED]
    assert [c[0] for c in script.REST_CALLS] == [e["operation"] for e in REST_EXPECTED]
