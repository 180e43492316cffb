"""boto3 through `inspector proxy` to moto's S3 server, with SigV4 signatures checked by moto.

moto checks signatures once its first few (unauthenticated) calls have created an IAM user:
a request whose Host header changed on the way fails with SignatureDoesNotMatch, which is why the
sidecar keeps the client's Host (and why `--rewrite-host` breaks S3: tested).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import time

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ResponseStreamingError
from live_servers import MotoServer
from live_sidecar import Sidecar, write_rule

from inspector import fields

SID_PICKLE = 9300001
SID_PUT = 9300002
BUCKET = "models"


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo owned",))


@pytest.fixture(scope="module")
def moto():
    """moto's server in its own process, checking signatures after 4 setup calls."""
    server = MotoServer({"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    endpoint = server.endpoint
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
                           aws_secret_access_key="setup")
        iam.create_user(UserName="ml")
        key = iam.create_access_key(UserName="ml")["AccessKey"]
        iam.put_user_policy(UserName="ml", PolicyName="s3", PolicyDocument='{"Version": "2012-10-17", "Statement": '
                            '[{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}')
        credentials = (key["AccessKeyId"], key["SecretAccessKey"])
        direct = _s3(endpoint, credentials)
        direct.create_bucket(Bucket=BUCKET)  # the 4th free call
        yield endpoint, credentials
    finally:
        server.stop()


def _s3(endpoint: str, credentials: tuple[str, str], verify: str | bool = False):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=credentials[0],
                        aws_secret_access_key=credentials[1], verify=verify,
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    if "s3.model.pickle.dangerous" not in fields.catalogue():
        pytest.skip("the S3 parser with pickle scanning is not there")
    directory = tmp_path_factory.mktemp("s3-rules")
    write_rule(directory, SID_PICKLE, "Pickle model with dangerous globals", "s3",
               {"s3.model.pickle.dangerous|exists": True}, action="block")
    write_rule(directory, SID_PUT, "Object upload", "s3", {"s3.operation": "PutObject"})
    return directory


@pytest.fixture(scope="module")
def sidecar(moto, rules, certs, tmp_path_factory):
    endpoint, _ = moto
    with Sidecar(tmp_path_factory.mktemp("s3"), endpoint, rules, cert=certs.server_cert,
                 key=certs.server_key) as proxy:
        yield proxy


@pytest.fixture
def s3(sidecar, moto, certs):
    _, credentials = moto
    return _s3(f"https://localhost:{sidecar.port}", credentials, verify=str(certs.ca))


def test_signatures_validate_through_the_sidecar(sidecar, s3, moto, certs):
    s3.put_object(Bucket=BUCKET, Key="notes/readme.txt", Body=b"hello models")
    assert s3.get_object(Bucket=BUCKET, Key="notes/readme.txt")["Body"].read() == b"hello models"
    _, credentials = moto
    wrong = _s3(f"https://localhost:{sidecar.port}", (credentials[0], "not-the-secret"), verify=str(certs.ca))
    with pytest.raises(ClientError) as raised:
        wrong.get_object(Bucket=BUCKET, Key="notes/readme.txt")
    assert raised.value.response["Error"]["Code"] == "SignatureDoesNotMatch"  # moto does check them
    alerts = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"
                                              and r["alert"]["signature_id"] == SID_PUT])
    assert alerts[-1]["s3"]["bucket"] == BUCKET and alerts[-1]["s3"]["key"] == "notes/readme.txt"


def test_rewriting_the_host_breaks_sigv4(moto, rules, certs, tmp_path):
    endpoint, credentials = moto
    with Sidecar(tmp_path, endpoint, rules, cert=certs.server_cert, key=certs.server_key,
                 args=["--rewrite-host"]) as proxy:
        client = _s3(f"https://localhost:{proxy.port}", credentials, verify=str(certs.ca))
        with pytest.raises(ClientError) as raised:
            client.list_objects_v2(Bucket=BUCKET)
    assert raised.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_pickle_model_pull_is_blocked_with_access_denied(sidecar, s3, moto):
    endpoint, credentials = moto
    _s3(endpoint, credentials).put_object(Bucket=BUCKET, Key="models/classifier.pkl",
                                          Body=pickle.dumps(_Exploit(), protocol=4))
    _s3(endpoint, credentials).put_object(Bucket=BUCKET, Key="models/weights.pkl",
                                          Body=pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    assert pickle.loads(s3.get_object(Bucket=BUCKET, Key="models/weights.pkl")["Body"].read()) == {"w": [1.0, 2.0]}
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket=BUCKET, Key="models/classifier.pkl")
    error = raised.value.response["Error"]
    assert error["Code"] == "AccessDenied"
    assert error["Message"] == f"blocked by inspector: Pickle model with dangerous globals (sid {SID_PICKLE})"
    alert = sidecar.alerts(SID_PICKLE)[-1]
    assert alert["alert"]["action"] == "blocked"
    assert "posix.system" in alert["s3"]["model"]["pickle"]["dangerous"]


def test_large_pickle_pull_is_aborted_after_its_first_part(sidecar, s3, moto):
    """Over the stream threshold the body streams: the held first part shows the pickle, the
    transfer is aborted and nothing of it reaches the client."""
    endpoint, credentials = moto
    payload = pickle.dumps([_Exploit(), b"\x00" * (3 * 1024 * 1024)], protocol=4)
    _s3(endpoint, credentials).put_object(Bucket=BUCKET, Key="models/big.pkl", Body=payload)
    with pytest.raises((ClientError, ResponseStreamingError, EndpointConnectionError, ConnectionError)):
        s3.get_object(Bucket=BUCKET, Key="models/big.pkl")["Body"].read()
    alerts = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"
                                              and r["alert"]["signature_id"] == SID_PICKLE
                                              and r["s3"].get("key") == "models/big.pkl"])
    assert alerts[-1]["alert"]["action"] == "blocked"
    assert sidecar.metric("inspector_blocks_total", reason="abort") >= 1


def test_64_mib_object_passes_with_bounded_memory(sidecar, s3):
    """Upload and download 64 MiB through the sidecar: it streams, so its peak RSS grows by far
    less than the object (mitmproxy buffering it measured 430 MB)."""
    baseline = sidecar.peak_rss_mib()
    body = os.urandom(1024 * 1024) * 64
    s3.put_object(Bucket=BUCKET, Key="blobs/64m.bin", Body=body)
    downloaded = s3.get_object(Bucket=BUCKET, Key="blobs/64m.bin")["Body"].read()
    assert downloaded == body
    peak = sidecar.peak_rss_mib()
    print(f"sidecar peak RSS: {baseline:.0f} MiB before, {peak:.0f} MiB after 64 MiB up and down")
    assert peak - baseline < 48, (baseline, peak)
    records = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "s3"
                                               and r["s3"].get("key") == "blobs/64m.bin"
                                               and r["s3"].get("operation") == "GetObject"])
    assert records[-1]["http"]["length"] == 64 * 1024 * 1024
    assert sidecar.metric("inspector_streams_total", kind="response_body") >= 1


def test_large_safetensors_pull_is_released_once_its_header_is_in(sidecar, s3, moto):
    """The module's block rule reads the model's pickle globals only: a safetensors file's first
    bytes rule a pickle out, so the hold ends there (inspector_body_holds_total{ended_by="settled"})
    and the record still describes the whole file; the large pickle test above is held and blocked."""
    endpoint, credentials = moto
    header = json.dumps({"w": {"dtype": "F32", "shape": [3 << 18], "data_offsets": [0, 3 << 20]}}).encode()
    body = struct.pack("<Q", len(header)) + header + os.urandom(3 << 20)
    _s3(endpoint, credentials).put_object(Bucket=BUCKET, Key="models/big.safetensors", Body=body)
    settled = sidecar.metric("inspector_body_holds_total", ended_by="settled")
    assert s3.get_object(Bucket=BUCKET, Key="models/big.safetensors")["Body"].read() == body
    records = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "s3"
                                               and r["s3"].get("key") == "models/big.safetensors"
                                               and r["s3"].get("operation") == "GetObject"])
    assert records[-1]["http"]["length"] == len(body)
    assert records[-1]["s3"]["model"]["format"] == "safetensors"
    assert records[-1]["s3"]["model"]["safetensors"]["header_valid"] is True
    assert sidecar.metric("inspector_body_holds_total", ended_by="settled") == settled + 1


def test_small_pickle_put_gets_access_denied_and_never_reaches_moto(sidecar, s3, moto):
    """boto3 sends PutObject chunked (aws-chunked, Expect: 100-continue): a small body is held
    whole, inspected, and answered with S3's AccessDenied; moto never sees the request."""
    endpoint, credentials = moto
    with pytest.raises(ClientError) as raised:
        s3.put_object(Bucket=BUCKET, Key="uploads/evil.pkl", Body=pickle.dumps(_Exploit(), protocol=4))
    assert raised.value.response["Error"]["Code"] == "AccessDenied"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as missing:
        _s3(endpoint, credentials).head_object(Bucket=BUCKET, Key="uploads/evil.pkl")
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    records = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "s3"
                                               and r["s3"].get("key") == "uploads/evil.pkl"])
    assert records[-1]["http"]["status"] == 403


def test_blocked_large_part_closes_the_client_at_once(sidecar, s3, moto):
    """A blocked UploadPart over the threshold already streams when the pickle shows: the
    client's connection is closed at once (no hang), the record says the transfer was cut, and
    the sidecar's own cut is a block, not an upstream error."""
    errors_before = sidecar.metric("inspector_upstream_errors_total")
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key="uploads/big-evil.pkl")
    payload = pickle.dumps([_Exploit(), b"\x00" * (3 * 1024 * 1024)], protocol=4)
    started = time.monotonic()
    with pytest.raises((ClientError, ConnectionClosedError, EndpointConnectionError, ConnectionError)):
        s3.upload_part(Bucket=BUCKET, Key="uploads/big-evil.pkl", UploadId=upload["UploadId"], PartNumber=1,
                       Body=payload)
    assert time.monotonic() - started < 5
    aborted = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "anomaly"
                                               and r["anomaly"]["event"] == "transfer_aborted"])
    assert "sid 9300001" in aborted[-1]["anomaly"]["message"]
    assert sidecar.metric("inspector_blocks_total", reason="abort") >= 1
    assert sidecar.metric("inspector_upstream_errors_total") == errors_before


def test_benign_multipart_parts_have_no_false_truncation(sidecar, s3):
    """5 MiB parts stream (aws-chunked); the held first MiB is a partial view, not the body's
    end: no s3_aws_chunked_truncated anomaly."""
    config = TransferConfig(multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    body = os.urandom(1 << 20) * 11
    s3.upload_fileobj(io.BytesIO(body), BUCKET, "blobs/parts.bin", Config=config)
    assert s3.get_object(Bucket=BUCKET, Key="blobs/parts.bin")["Body"].read() == body
    def three_parts(records: list[dict]) -> list[dict] | None:  # records land as each part's answer goes out
        found = [r for r in records if r["event_type"] == "s3" and r["s3"].get("operation") == "UploadPart"
                 and r["s3"].get("key") == "blobs/parts.bin"]
        return found if len(found) >= 3 else None

    parts = sidecar.wait_records(three_parts)
    assert len(parts) == 3, parts
    flows = {(r["flow_id"], r["tx_id"]) for r in parts}
    anomalies = [r["anomaly"] for r in sidecar.records() if r["event_type"] == "anomaly"
                 and (r["flow_id"], r.get("tx_id")) in flows]
    assert [a for a in anomalies if a["event"].endswith("_truncated")] == [], anomalies
