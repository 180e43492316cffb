"""The `s3` layer through the whole pipeline: boto3 against moto, captured on loopback.

`pcaps/clients/s3.pcap` was made by `pcaps/clients/make_s3.py` (its docstring lists the calls in
order). Every record is checked field by field; the values that change from run to run (request
ids, the multipart upload id) are checked for shape and consistency, then set aside.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from inspector.analyze import Analyzer
from inspector.engine import Engine
from inspector.rules import load_rules

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "pcaps" / "clients"
S3_PCAP = CLIENTS / "s3.pcap"

LONG_TERM = "AKIAIOSFODNN7EXAMPLE"
TEMPORARY = "ASIAY34FZKBOKMUTVV7A"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "FwoGZXIvYXdzEJr//////////wEaDEXAMPLETOKENVALUE"

PATH_SIGNED = {"bucket": "models", "addressing": "path", "region": "us-east-1", "auth": "sigv4",
               "access_key_id": LONG_TERM, "credential_type": "long_term", "anonymous": False,
               "session_token": False, "payload_signing": "signed"}
VIRTUAL_TEMPORARY = {"bucket": "models", "addressing": "virtual", "region": "us-east-1", "auth": "sigv4",
                     "access_key_id": TEMPORARY, "credential_type": "temporary", "anonymous": False,
                     "session_token": True, "payload_signing": "signed"}
VIRTUAL_ANONYMOUS = {"bucket": "models", "addressing": "virtual", "region": "us-east-1", "auth": "anonymous",
                     "credential_type": "anonymous", "anonymous": True, "session_token": False}
PRESIGNED = {"bucket": "models", "addressing": "path", "access_key_id": LONG_TERM, "credential_type": "long_term",
             "anonymous": False, "session_token": False}
SIGNED_BY = ["signature", "headers"]


def by_name(fmt: str) -> dict:
    return {"format": fmt, "format_source": "extension", "confidence": "low"}


def pickle_model(scanned: int, globals_: list[str], dangerous: list[str], protocol: int, **extra) -> dict:
    return {"format": "pickle", "format_source": "magic", "confidence": "high", "extension_format": "pickle",
            "extension_mismatch": False, **extra,
            "pickle": {"scan": "complete", "scanned_bytes": scanned, "globals": globals_, "dangerous": dangerous,
                       "protocol": protocol}}


BENIGN = pickle_model(98, [], [], 4)
MALICIOUS = pickle_model(42, ["posix.system"], ["posix.system"], 2)
TORCH_GLOBALS = ["collections.OrderedDict", "torch._utils._rebuild_tensor_v2"]
TORCH_ENTRIES = ["archive/data.pkl", "archive/data/0", "archive/version"]


def torch_model(globals_: list[str], dangerous: list[str], scanned: int) -> dict:
    return {"format": "torch_zip", "format_source": "magic", "confidence": "high", "extension_format": "torch",
            "extension_mismatch": False,
            "archive": {"entries": TORCH_ENTRIES, "entry_count": 3, "complete": True,
                        "pickle_entries": ["archive/data.pkl"]},
            "pickle": {"scan": "complete", "scanned_bytes": scanned, "globals": globals_, "dangerous": dangerous,
                       "protocol": 2}}


BIG_PREFIX = {"format": "torch_zip", "format_source": "magic", "confidence": "high",
              "archive": {"entries": ["archive/data.pkl", "archive/data/0"], "entry_count": 2, "complete": False,
                          "pickle_entries": ["archive/data.pkl"]},
              "pickle": {"scan": "partial", "scanned_bytes": 111, "globals": TORCH_GLOBALS, "dangerous": [],
                         "protocol": 2}}
SAFETENSORS = {"format": "safetensors", "format_source": "magic", "confidence": "high",
               "extension_format": "safetensors", "extension_mismatch": False,
               "safetensors": {"header_length": 168, "metadata_keys": ["format"], "tensor_count": 2,
                               "dtypes": ["F16", "F32"], "header_valid": True}}
GGUF = {"format": "gguf", "format_source": "magic", "confidence": "high", "extension_format": "gguf",
        "extension_mismatch": False,
        "gguf": {"version": 3, "tensor_count": 0, "metadata_count": 4, "architecture": "llama", "name": "tiny-llama",
                 "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}", "metadata_read": 4}}
NUMPY = {"format": "numpy", "format_source": "magic", "confidence": "high", "extension_format": "numpy",
         "extension_mismatch": False,
         "numpy": {"version": "1.0", "dtype": "<f4", "shape": [3, 4], "object_dtype": False}}
ONNX = {"format": "onnx", "format_source": "magic", "confidence": "high", "extension_format": "onnx",
        "extension_mismatch": False, "onnx": {"ir_version": 9, "producer": "pytorch", "producer_version": "2.3.0"}}
ALL_KEYS = ["arrays/embeddings.npy", "benign/model.pkl", "big/model.bin", "chunked/evil.pt", "evil/payload.pkl",
            "llm/model.gguf", "torch/model.pt", "weights/model.safetensors"]


def put(key: str, size: int, model: dict) -> dict:
    return {**PATH_SIGNED, "operation": "PutObject", "key": key, "status": 200, "bytes": size, "object_size": size,
            "model": model, "detected_by": SIGNED_BY}


#: (http method, s3 object without request_id / upload_id), in capture order.
EXPECTED: list[tuple[str, dict]] = [
    ("PUT", {**PATH_SIGNED, "operation": "CreateBucket", "status": 200, "detected_by": SIGNED_BY}),
    ("PUT", put("benign/model.pkl", 98, BENIGN)),
    ("PUT", put("evil/payload.pkl", 42, MALICIOUS)),
    ("PUT", put("torch/model.pt", 461, torch_model(TORCH_GLOBALS, [], 111))),
    ("PUT", put("weights/model.safetensors", 200, SAFETENSORS)),
    ("PUT", put("llm/model.gguf", 240, GGUF)),
    ("PUT", put("arrays/embeddings.npy", 176, NUMPY)),
    ("PUT", {**put("chunked/evil.pt", 392, torch_model(["posix.system"], ["posix.system"], 42)),
             "payload_signing": "streaming_unsigned_trailer", "chunked": True, "decoded_length": 392,
             "chunk_count": 1}),
    ("POST", {**PATH_SIGNED, "operation": "CreateMultipartUpload", "key": "big/model.bin", "status": 200,
              "model": by_name("torch"), "detected_by": [*SIGNED_BY, "response"]}),
    ("PUT", {**PATH_SIGNED, "operation": "UploadPart", "key": "big/model.bin", "status": 200, "bytes": 49152,
             "part_number": 1, "model": BIG_PREFIX, "detected_by": SIGNED_BY}),
    ("PUT", {**PATH_SIGNED, "operation": "UploadPart", "key": "big/model.bin", "status": 200, "bytes": 33221,
             "part_number": 2, "model": by_name("torch"), "detected_by": SIGNED_BY}),
    ("POST", {**PATH_SIGNED, "operation": "CompleteMultipartUpload", "key": "big/model.bin", "status": 200,
              "part_count": 2, "model": by_name("torch"), "detected_by": [*SIGNED_BY, "response"]}),
    ("GET", {**PATH_SIGNED, "operation": "GetObject", "key": "evil/payload.pkl", "status": 200, "bytes": 42,
             "object_size": 42, "model": MALICIOUS, "detected_by": SIGNED_BY}),
    ("GET", {**PATH_SIGNED, "operation": "GetObject", "key": "benign/model.pkl", "status": 200, "bytes": 98,
             "object_size": 98, "model": BENIGN, "detected_by": SIGNED_BY}),
    ("GET", {**PATH_SIGNED, "operation": "GetObject", "key": "big/model.bin", "range": "bytes=0-4095", "status": 206,
             "bytes": 4096, "object_size": 82373, "model": BIG_PREFIX, "detected_by": SIGNED_BY}),
    ("GET", {**PATH_SIGNED, "operation": "GetObject", "key": "big/model.bin", "range": "bytes=40960-45055",
             "status": 206, "bytes": 4096, "object_size": 82373, "model": by_name("torch"), "detected_by": SIGNED_BY}),
    ("HEAD", {**PATH_SIGNED, "operation": "HeadObject", "key": "torch/model.pt", "status": 200, "object_size": 461,
              "model": by_name("torch"), "detected_by": SIGNED_BY}),
    ("GET", {**PATH_SIGNED, "operation": "ListObjectsV2", "status": 200, "object_count": 8, "keys": ALL_KEYS,
             "detected_by": [*SIGNED_BY, "response"]}),
    ("GET", {**PATH_SIGNED, "operation": "GetObject", "key": "missing/model.pt", "status": 404,
             "error_code": "NoSuchKey", "error_message": "The specified key does not exist.",
             "model": by_name("torch"), "detected_by": SIGNED_BY}),
    ("DELETE", {**PATH_SIGNED, "operation": "DeleteObject", "key": "arrays/embeddings.npy", "status": 204,
                "detected_by": SIGNED_BY}),
    ("GET", {**PRESIGNED, "operation": "GetObject", "key": "weights/model.safetensors", "region": "us-east-1",
             "auth": "presigned_v4", "presign_expires": 900, "status": 200, "bytes": 200, "object_size": 200,
             "model": SAFETENSORS, "detected_by": ["signature"]}),
    ("GET", {**PRESIGNED, "operation": "GetObject", "key": "llm/model.gguf", "auth": "presigned_v2", "status": 200,
             "bytes": 240, "object_size": 240, "model": GGUF, "detected_by": ["signature"]}),
    ("PUT", {**VIRTUAL_TEMPORARY, "operation": "PutObject", "key": "vhost/model.onnx", "status": 200, "bytes": 50,
             "object_size": 50, "model": ONNX, "detected_by": ["signature", "host", "headers"]}),
    ("GET", {**VIRTUAL_TEMPORARY, "operation": "GetObject", "key": "vhost/model.onnx", "status": 200, "bytes": 50,
             "object_size": 50, "model": ONNX, "detected_by": ["signature", "host", "headers"]}),
    ("POST", {**VIRTUAL_TEMPORARY, "operation": "DeleteObjects", "status": 200, "object_count": 1,
              "keys": ["vhost/model.onnx"], "detected_by": ["signature", "host", "headers", "response"]}),
    ("GET", {**{k: v for k, v in VIRTUAL_TEMPORARY.items() if k not in ("bucket", "addressing")},
             "operation": "ListBuckets", "status": 200, "buckets": ["models"],
             "detected_by": ["signature", "host", "headers", "response"]}),
    ("GET", {**VIRTUAL_ANONYMOUS, "operation": "GetObject", "key": "evil/payload.pkl", "status": 403,
             "model": by_name("pickle"), "detected_by": ["host"]}),
    ("PUT", {**PATH_SIGNED, "operation": "PutObjectAcl", "key": "benign/model.pkl", "status": 200,
             "detected_by": SIGNED_BY}),
    ("GET", {**VIRTUAL_ANONYMOUS, "operation": "GetObject", "key": "benign/model.pkl", "status": 200, "bytes": 98,
             "object_size": 98, "model": BENIGN, "detected_by": ["host"]}),
]
MULTIPART = slice(8, 12)


def analyze(path: Path, engine: Engine | None = None) -> tuple[Analyzer, list[dict]]:
    records: list[dict] = []
    analyzer = Analyzer(records.append, engine=engine)
    analyzer.analyze_file(path)
    return analyzer, records


@pytest.fixture(scope="module")
def capture() -> tuple[Analyzer, list[dict]]:
    return analyze(S3_PCAP)


def s3_records(records: list[dict]) -> list[dict]:
    """Transactions carrying an `s3` object (alerts and anomalies aside)."""
    return [r for r in records if "s3" in r and r["event_type"] not in ("alert", "anomaly")]


def stable(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("request_id", "upload_id")}


def test_every_call_is_an_s3_record_field_by_field(capture):
    records = s3_records(capture[1])
    assert len(records) == len(EXPECTED)
    for index, (record, (method, expected)) in enumerate(zip(records, EXPECTED)):
        assert record["http"]["http_method"] == method, index
        assert stable(record["s3"]) == expected, (index, record["s3"])


def test_volatile_fields_have_their_shape(capture):
    records = s3_records(capture[1])
    for record in records:
        assert re.fullmatch(r"[A-Za-z0-9]{52}", record["s3"]["request_id"]), record["s3"]
    upload_ids = {r["s3"]["upload_id"] for r in records[MULTIPART]}
    assert len(upload_ids) == 1
    assert all("upload_id" not in r["s3"] for i, r in enumerate(records) if not 8 <= i < 12)
    (upload_id,) = upload_ids
    assert f"uploadId={upload_id}" in records[9]["http"]["url"]


def test_capture_has_no_anomalies_and_clean_flows(capture):
    analyzer, records = capture
    assert analyzer.stats.anomalies == {}
    assert sum(analyzer.stats.transactions.values()) == len(EXPECTED)
    assert all(r["app_proto"] == "http" for r in s3_records(records))
    assert analyzer.stats.tcp["gaps"] == 0


def test_records_are_typed_s3(capture):
    """Bucket `models` is a common name: no later layer may take S3 calls for its own API."""
    records = s3_records(capture[1])
    assert [r["event_type"] for r in records] == ["s3"] * len(EXPECTED)
    assert [sorted(k for k in r if k in ("s3", "torchserve", "mlflow", "llm", "ray")) for r in records] == [
        ["s3"]] * len(EXPECTED)


def test_records_are_layered_on_http(capture):
    record = s3_records(capture[1])[7]  # the aws-chunked upload
    headers = {h["name"]: h["value"] for h in record["http"]["request_headers"]}
    assert headers["content-encoding"] == "aws-chunked"
    assert headers["x-amz-content-sha256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    assert record["http"]["request_length"] > 392  # the framing is counted by http, not by s3.bytes
    assert set(record["http"]["interim_status"]) == {100}  # Expect: 100-continue (moto answers it twice)


def test_no_secret_reaches_the_log(capture):
    """The secret key, the session token and every signature in the capture stay out of the log."""
    text = "\n".join(json.dumps(r) for r in capture[1])
    raw = S3_PCAP.read_bytes()
    signatures = set(re.findall(rb"Signature=([0-9a-f]{64})", raw))  # header and X-Amz-Signature query
    v2_signatures = set(re.findall(rb"[?&]Signature=([A-Za-z0-9%]{20,})", raw))
    assert len(signatures) >= 25 and v2_signatures
    assert SECRET not in text and SESSION_TOKEN not in text
    for signature in signatures | v2_signatures:
        assert signature.decode() not in text
    assert "Signature=[redacted]" in text


# --- an end-to-end rule ---------------------------------------------------------------------------

RULE = textwrap.dedent("""\
    title: Pickle importing a dangerous callable moved through S3
    id: 6d0f7c0e-5a43-4b0e-9c1e-3f1d2a9b8c71
    sid: 9000301
    rev: 1
    status: experimental
    level: critical
    description: A model object whose pickle imports os/posix/subprocess/eval... was uploaded or downloaded.
    tags: [atlas.aml.t0011.000, atlas.aml.t0010.003]
    event: s3
    detection:
      selection:
        s3.model.pickle.dangerous|exists: true
      condition: selection
    """)


def test_dangerous_pickle_rule_fires_on_the_malicious_objects_only(tmp_path):
    (tmp_path / "s3_dangerous_pickle.yml").write_text(RULE)
    engine = Engine(load_rules(tmp_path / "s3_dangerous_pickle.yml"))
    _, records = analyze(S3_PCAP, engine)
    alerts = [r for r in records if r["event_type"] == "alert"]
    fired = [(a["http"]["http_method"], a["s3"]["operation"], a["s3"]["key"]) for a in alerts]
    assert fired == [("PUT", "PutObject", "evil/payload.pkl"), ("PUT", "PutObject", "chunked/evil.pt"),
                     ("GET", "GetObject", "evil/payload.pkl")]
    assert {a["alert"]["signature_id"] for a in alerts} == {9000301}
    assert all(a["s3"]["model"]["pickle"]["dangerous"] == ["posix.system"] for a in alerts)
    benign = [r for r in s3_records(records) if r["s3"].get("key") == "benign/model.pkl"]
    assert len(benign) == 4 and all(r["s3"].get("model", {}).get("pickle", {}).get("dangerous", []) == []
                                    for r in benign)


# --- the capture script -------------------------------------------------------------------------


def _capture_problem() -> str | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "capturing on lo needs root"
    if shutil.which("tcpdump") is None:
        return "tcpdump is not installed"
    return None


def summary(path: Path) -> list[tuple[str, str]]:
    return [(r["http"]["http_method"], json.dumps(stable(r["s3"]), sort_keys=True))
            for r in s3_records(analyze(path)[1])]


@pytest.mark.slow
def capture_gaps(path: Path) -> int:
    """TCP gaps in a capture: bytes the capture missed, as the reassembly saw them."""
    analyzer = Analyzer(lambda record: None)
    analyzer.analyze_file(path)
    return analyzer.stats.tcp.get("gaps", 0)


def test_capture_script_reproduces_the_transactions(tmp_path):
    """Run make_s3.py into tmp_path (its own process: it wraps getaddrinfo and sets moto's part size)."""
    reason = _capture_problem()
    if reason:
        pytest.skip(reason)
    fresh = tmp_path / "s3.pcap"
    for _ in range(3):  # a loopback capture on a loaded machine can lose a packet: capture again
        done = subprocess.run([sys.executable, str(CLIENTS / "make_s3.py"), "--out", str(tmp_path)],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
        assert done.returncode == 0, done.stderr[-2000:]
        if not capture_gaps(fresh):
            break
    assert summary(fresh) == summary(S3_PCAP)
    assert [(m, json.dumps(e, sort_keys=True)) for m, e in EXPECTED] == summary(fresh)
