"""The `s3` layer on exchanges built by hand: signatures made by botocore's own signers, variants
the real clients cannot produce (malformed SigV4, lying aws-chunked sizes, non-AWS servers), the
operation table, host names, the field catalogue, and "never raises" on random exchanges.

The captured traffic (boto3 against moto) is in test_s3_captures.py.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import struct
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector import fields
from inspector.analyze import Analyzer
from inspector.apps import OBSERVER_FACTORIES, LayerContext, transaction_record
from inspector.exchange import ExchangeBuilder
from inspector.http import TO_CLIENT, TO_SERVER, BodyReceived, HeadReceived, HttpExchange, HttpMessage, MessageEnded
from inspector.limits import Limits
from inspector.protocols import s3
from inspector.protocols.awschunked import AwsChunkedDecoder
from inspector.protocols.s3wire import AwsHost, aws_s3_host, operation, parse_query

S3_PCAP = Path(__file__).resolve().parents[2] / "pcaps" / "clients" / "s3.pcap"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
TEMP_KEY_ID = "ASIAQNZGKIQY56JQ7WML"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLE//SESSION//TOKEN"


class Shell:
    def __reduce__(self):
        import os
        return (os.system, ("id",))


def message(kind: str, headers: list[tuple[str, str]], body: bytes = b"", **kw) -> HttpMessage:
    return HttpMessage(kind=kind, version="HTTP/1.1", headers=headers, body=body, body_length=len(body),
                       complete=True, **kw)


def exchange(method: str, url: str, headers: dict[str, str] | None = None, body: bytes = b"", *,
             status: int | None = 200, response_headers: list[tuple[str, str]] | None = None,
             response_body: bytes = b"") -> HttpExchange:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request_headers = [("host", parts.netloc)] + [(k.lower(), v) for k, v in (headers or {}).items()]
    request = message("request", request_headers, body, method=method, path=target, authority=parts.netloc)
    response = None
    if status is not None:
        response = message("response", response_headers or [], response_body, status=status)
    return HttpExchange(request=request, response=response, stream_id=0)


def signed(method: str, url: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
           key_id: str = KEY_ID, token: str | None = None, region: str = "eu-west-2", **kw) -> HttpExchange:
    """A request signed by botocore's S3 SigV4 signer."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    S3SigV4Auth(Credentials(key_id, SECRET, token), "s3", region).add_auth(request)
    return exchange(method, url, dict(request.headers), body, **kw)


def run(ex: HttpExchange) -> tuple[dict | None, list[tuple[str, str]]]:
    record, anomalies = transaction_record(None, ex)
    return record.get("s3"), [(event, text) for layer, event, text in anomalies if layer == "s3"]


def s3_object(ex: HttpExchange) -> dict:
    obj, anomalies = run(ex)
    assert obj is not None and anomalies == [], anomalies
    return obj


def events(anomalies: list[tuple[str, str]]) -> list[str]:
    return [event for event, _ in anomalies]


def torch_zip(data_pkl: bytes, storage: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/data/0", storage)
        archive.writestr("archive/version", b"3\n")
    return buffer.getvalue()


# --- credentials and addressing -------------------------------------------------------------------


def test_sigv4_virtual_hosted_get_with_range():
    url = "https://models.s3.eu-west-2.amazonaws.com/llama%203/%C3%A4%2Bb.pt"
    body = pickle.dumps(Shell(), protocol=2)
    ex = signed("GET", url, headers={"Range": "bytes=0-99"}, status=206,
                response_headers=[("content-range", f"bytes 0-{len(body) - 1}/{len(body)}"),
                                  ("x-amz-request-id", "4442587FB7D0A2F9"), ("x-amz-id-2", "abc="),
                                  ("server", "AmazonS3")], response_body=body)
    obj = s3_object(ex)
    assert obj == {
        "operation": "GetObject", "bucket": "models", "key": "llama 3/ä+b.pt", "addressing": "virtual",
        "region": "eu-west-2", "auth": "sigv4", "access_key_id": KEY_ID, "credential_type": "long_term",
        "anonymous": False, "session_token": False, "payload_signing": "signed", "range": "bytes=0-99",
        "status": 206, "request_id": "4442587FB7D0A2F9", "bytes": len(body), "object_size": len(body),
        "model": {"format": "pickle", "format_source": "magic", "confidence": "high", "extension_format": "torch",
                  "extension_mismatch": False,
                  "pickle": {"scan": "complete", "scanned_bytes": len(body), "globals": ["posix.system"],
                             "dangerous": ["posix.system"], "protocol": 2}},
        "detected_by": ["signature", "host", "headers", "response"],
    }


def test_temporary_credentials_and_secrets_stay_out():
    ex = signed("PUT", "https://s3.us-west-2.amazonaws.com/models/m.safetensors", body=b"{}",
                key_id=TEMP_KEY_ID, token=TOKEN, region="us-west-2")
    record, _ = transaction_record(None, ex)
    obj = record["s3"]
    assert (obj["credential_type"], obj["session_token"], obj["access_key_id"]) == ("temporary", True, TEMP_KEY_ID)
    assert (obj["bucket"], obj["key"], obj["addressing"], obj["region"]) == ("models", "m.safetensors", "path",
                                                                             "us-west-2")
    text = json.dumps(record)
    authorization = dict(ex.request.headers)["authorization"]
    assert TOKEN not in text and SECRET not in text and authorization.rsplit("=", 1)[1] not in text


def test_sigv2_header_and_presigned_queries():
    request = AWSRequest(method="GET", url="https://models.s3.amazonaws.com/a.pkl")
    HmacV1Auth(Credentials(KEY_ID, SECRET)).add_auth(request)
    obj = s3_object(exchange("GET", request.url, dict(request.headers)))
    assert (obj["auth"], obj["access_key_id"], obj["bucket"], obj["key"]) == ("sigv2", KEY_ID, "models", "a.pkl")
    assert "region" not in obj

    request = AWSRequest(method="GET", url="http://10.0.0.5:9000/models/x.pt")
    S3SigV4QueryAuth(Credentials(TEMP_KEY_ID, SECRET, TOKEN), "s3", "ap-south-1", expires=604800).add_auth(request)
    record, _ = transaction_record(None, exchange("GET", request.url, status=403))
    obj = record["s3"]
    assert (obj["auth"], obj["region"], obj["presign_expires"], obj["session_token"]) == (
        "presigned_v4", "ap-south-1", 604800, True)
    assert (obj["bucket"], obj["key"], obj["detected_by"]) == ("models", "x.pt", ["signature"])
    assert TOKEN not in json.dumps(record)

    request = AWSRequest(method="GET", url="http://minio.internal:9000/models/x.pt")
    HmacV1QueryAuth(Credentials("minioadmin", SECRET), expires=60).add_auth(request)
    obj = s3_object(exchange("GET", request.url, status=200))
    assert (obj["auth"], obj["access_key_id"], obj["credential_type"]) == ("presigned_v2", "minioadmin", "other")


def test_sigv4a_scope_has_no_region():
    headers = {"Authorization": "AWS4-ECDSA-P256-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/s3/aws4_request, "
                                "SignedHeaders=host;x-amz-date;x-amz-region-set, Signature=3045022100ab",
               "X-Amz-Region-Set": "us-east-1,us-west-2"}
    obj = s3_object(exchange("GET", "https://mrap.accesspoint.s3-global.amazonaws.com/k.bin", headers))
    assert (obj["auth"], obj["region"], obj["access_key_id"]) == ("sigv4a", "us-east-1,us-west-2", KEY_ID)


@pytest.mark.parametrize(("host", "expected"), [
    ("s3.amazonaws.com", AwsHost(None, None)),
    ("s3.eu-central-1.amazonaws.com", AwsHost(None, "eu-central-1")),
    ("my.dotted.bucket.s3.us-gov-west-1.amazonaws.com", AwsHost("my.dotted.bucket", "us-gov-west-1")),
    ("logs.s3-us-west-2.amazonaws.com", AwsHost("logs", "us-west-2")),
    ("b.s3.dualstack.ap-southeast-3.amazonaws.com", AwsHost("b", "ap-southeast-3")),
    ("b.s3-fips.us-east-2.amazonaws.com", AwsHost("b", "us-east-2")),
    ("b.s3-accelerate.amazonaws.com", AwsHost("b", None)),
    ("site.s3-website-eu-west-1.amazonaws.com", AwsHost("site", "eu-west-1")),
    ("ap-123456789012.s3-accesspoint.us-east-1.amazonaws.com", AwsHost("ap-123456789012", "us-east-1")),
    ("bucket.vpce-1a2b3c4d-5e6f.s3.us-east-1.vpce.amazonaws.com", AwsHost("bucket", "us-east-1")),
    ("b.s3.cn-north-1.amazonaws.com.cn", AwsHost("b", "cn-north-1")),
    ("s3.bucket.example.com", None),
    ("sts.amazonaws.com", None),
    ("dynamodb.us-east-1.amazonaws.com", None),
    ("evil-amazonaws.com", None),
])
def test_aws_host_names(host, expected):
    assert aws_s3_host(host) == expected


# --- recognition ----------------------------------------------------------------------------------


def test_other_http_is_not_claimed():
    assert run(exchange("GET", "http://example.com/index.html"))[0] is None
    assert run(exchange("POST", "http://10.1.1.1/v1/chat/completions", {"Authorization": "Bearer sk-x"}))[0] is None


def test_another_aws_service_is_not_s3():
    request = AWSRequest(method="POST", url="https://sts.amazonaws.com/", data=b"Action=GetCallerIdentity")
    S3SigV4Auth(Credentials(KEY_ID, SECRET), "sts", "us-east-1").add_auth(request)  # carries x-amz-content-sha256
    assert run(exchange("POST", request.url, dict(request.headers), b"Action=GetCallerIdentity"))[0] is None


def test_anonymous_minio_on_a_custom_host_needs_its_response():
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)
    url = "http://minio.internal:9000/llm/qwen.gguf"
    assert run(exchange("GET", url, status=None))[0] is None
    assert run(exchange("GET", url, response_body=body))[0] is None
    obj = s3_object(exchange("GET", url, response_headers=[("server", "MinIO")], response_body=body))
    assert (obj["bucket"], obj["key"], obj["anonymous"], obj["detected_by"]) == ("llm", "qwen.gguf", True,
                                                                                 ["response"])
    assert obj["model"]["format"] == "gguf"
    ids = [("x-amz-request-id", "17B2"), ("x-amz-id-2", "dd9025bab4ad464b")]
    assert s3_object(exchange("GET", "http://10.9.8.7:9000/llm/q.gguf", response_headers=ids))["bucket"] == "llm"
    listing = b'<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    assert s3_object(exchange("GET", "http://minio:9000/llm?list-type=2",
                              response_body=listing))["operation"] == "ListObjectsV2"


def test_s3_behind_a_cdn_or_cname_has_no_bucket_and_the_path_is_the_key():
    """An anonymous Range GET answered by CloudFront with an S3 origin (headers as in a public capture)."""
    headers = [("x-amz-id-2", "f4EDJ9J3r+nGI0ruGZjLl2ln"), ("x-amz-request-id", "9SD45Q8SBPVZFP6C"),
               ("server", "AmazonS3"), ("content-range", "bytes 0-575/286705152"),
               ("via", "1.1 077b94dab77b8114.cloudfront.net (CloudFront)"), ("x-amz-cf-id", "2fo51_bzunTG3Zp==")]
    obj = s3_object(exchange("GET", "http://models.example.com/org/llama/pytorch_model.bin?v=2",
                             {"Range": "bytes=0-575"}, status=206, response_headers=headers,
                             response_body=bytes(576)))
    assert obj == {"operation": "GetObject", "key": "org/llama/pytorch_model.bin", "addressing": "cname",
                   "auth": "anonymous", "credential_type": "anonymous", "anonymous": True, "session_token": False,
                   "range": "bytes=0-575", "status": 206, "request_id": "9SD45Q8SBPVZFP6C", "bytes": 576,
                   "object_size": 286705152,
                   "model": {"format": "torch", "format_source": "extension", "confidence": "low"},
                   "detected_by": ["response"]}
    firmware = s3_object(exchange("GET", "http://dl.example.com/fw/001030-0000.bin", status=200,
                                  response_headers=headers[:3], response_body=bytes(16)))
    assert "model" not in firmware and firmware["key"] == "fw/001030-0000.bin"


def test_unsigned_request_with_s3_headers():
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(8)
    obj = s3_object(exchange("PUT", "http://10.2.2.2:7480/b/k.npy", {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, npy))
    assert (obj["payload_signing"], obj["detected_by"], obj["model"]["format"]) == ("unsigned", ["headers"],
                                                                                    "numpy")


def test_grpc_exchanges_are_left_alone():
    ex = signed("GET", "https://s3.eu-west-2.amazonaws.com/models/x.pt")
    assert s3.build(LayerContext(ex, {"http": {"hostname": "s3.eu-west-2.amazonaws.com"}, "grpc": {}})) is None


# --- responses ------------------------------------------------------------------------------------

ACCESS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                 b"<Message>Access Denied &amp; logged</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>")


def test_error_code_from_the_xml_body():
    obj = s3_object(exchange("GET", "https://models.s3.amazonaws.com/private/model.pt", status=403,
                             response_headers=[("content-type", "application/xml")], response_body=ACCESS_DENIED))
    assert (obj["error_code"], obj["error_message"], obj["anonymous"]) == ("AccessDenied", "Access Denied & logged",
                                                                          True)
    assert obj["model"] == {"format": "torch", "format_source": "extension", "confidence": "low"}


def test_complete_multipart_upload_failing_with_200():
    body = (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"a\"</ETag></Part>"
            b"<Part><PartNumber>2</PartNumber><ETag>\"b\"</ETag></Part><Part><PartNumber>3</PartNumber>"
            b"<ETag>\"c\"</ETag></Part></CompleteMultipartUpload>")
    error = b"<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>"
    obj = s3_object(signed("POST", "https://b.s3.eu-west-2.amazonaws.com/big.gguf?uploadId=VXBsb2FkIElE", body=body,
                           response_body=error))
    assert (obj["operation"], obj["upload_id"], obj["part_count"], obj["error_code"]) == (
        "CompleteMultipartUpload", "VXBsb2FkIElE", 3, "InternalError")


def test_create_multipart_upload_id_from_the_response():
    answer = (b'<InitiateMultipartUploadResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket>'
              b"<Key>m.pt</Key><UploadId>Zm9vYmFy.x-_</UploadId></InitiateMultipartUploadResult>")
    obj = s3_object(signed("POST", "https://b.s3.eu-west-2.amazonaws.com/m.pt?uploads", response_body=answer))
    assert (obj["operation"], obj["upload_id"]) == ("CreateMultipartUpload", "Zm9vYmFy.x-_")


def test_copy_object_and_upload_part_copy():
    source = {"x-amz-copy-source": "/staging/models%2Fllama%20v2.pt"}
    obj = s3_object(signed("PUT", "https://prod.s3.eu-west-2.amazonaws.com/llama.pt", headers=source))
    assert (obj["operation"], obj["copy_source"], obj["model"]["format"]) == ("CopyObject",
                                                                              "/staging/models/llama v2.pt", "torch")
    obj = s3_object(signed("PUT", "https://prod.s3.eu-west-2.amazonaws.com/llama.pt?partNumber=7&uploadId=u1",
                           headers=source))
    assert (obj["operation"], obj["part_number"], obj["upload_id"]) == ("UploadPartCopy", 7, "u1")


def test_listing_v1_with_prefix_and_versions():
    answer = (b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Contents><Key>m/a.pt</Key>'
              b"</Contents><Contents><Key>m/b&amp;c.pt</Key></Contents></ListBucketResult>")
    obj = s3_object(signed("GET", "https://s3.eu-west-2.amazonaws.com/models?prefix=m%2F&delimiter=%2F",
                           response_body=answer))
    assert (obj["operation"], obj["prefix"], obj["object_count"], obj["keys"]) == ("ListObjects", "m/", 2,
                                                                                   ["m/a.pt", "m/b&c.pt"])
    assert s3_object(signed("GET", "https://s3.eu-west-2.amazonaws.com/models?versions"))["operation"] == \
        "ListObjectVersions"


@pytest.mark.parametrize(("method", "bucket", "key", "query", "expected"), [
    ("GET", None, None, "", "ListBuckets"),
    ("GET", "b", None, "list-type=2&prefix=x", "ListObjectsV2"),
    ("GET", "b", None, "list-type=3", "ListObjects"),
    ("GET", "b", None, "policy", "GetBucketPolicy"),
    ("PUT", "b", None, "policy", "PutBucketPolicy"),
    ("DELETE", "b", None, "policy", "DeleteBucketPolicy"),
    ("GET", "b", None, "acl", "GetBucketAcl"),
    ("PUT", "b", None, "publicAccessBlock", "PutPublicAccessBlock"),
    ("GET", "b", None, "location", "GetBucketLocation"),
    ("GET", "b", None, "uploads", "ListMultipartUploads"),
    ("PUT", "b", None, "", "CreateBucket"),
    ("DELETE", "b", None, "", "DeleteBucket"),
    ("HEAD", "b", None, "", "HeadBucket"),
    ("POST", "b", None, "delete", "DeleteObjects"),
    ("POST", "b", None, "", "PostObject"),
    ("GET", "b", "k", "", "GetObject"),
    ("GET", "b", "k", "acl", "GetObjectAcl"),
    ("PUT", "b", "k", "acl", "PutObjectAcl"),
    ("GET", "b", "k", "tagging", "GetObjectTagging"),
    ("GET", "b", "k", "uploadId=u", "ListParts"),
    ("PUT", "b", "k", "partNumber=2&uploadId=u", "UploadPart"),
    ("POST", "b", "k", "uploads", "CreateMultipartUpload"),
    ("POST", "b", "k", "uploadId=u", "CompleteMultipartUpload"),
    ("DELETE", "b", "k", "uploadId=u", "AbortMultipartUpload"),
    ("DELETE", "b", "k", "", "DeleteObject"),
    ("HEAD", "b", "k", "", "HeadObject"),
    ("POST", "b", "k", "restore", "RestoreObject"),
    ("POST", "b", "k", "", "Unknown"),
    ("PATCH", "b", "k", "", "Unknown"),
    ("DELETE", None, None, "", "Unknown"),
])
def test_operation_table(method, bucket, key, query, expected):
    assert operation(method, bucket, key, parse_query(query), False) == expected


# --- malformed input ------------------------------------------------------------------------------


@pytest.mark.parametrize(("authorization", "problem"), [
    ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/s3/aws4_request, SignedHeaders=host, Signature=ab",
     "credential scope"),
    ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/s3/aws5_request, SignedHeaders=host, "
     "Signature=ab", "credential scope"),
    ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/s3/aws4_request", "lacks signedheaders"),
    ("AWS4-HMAC-SHA256 SignedHeaders=host, Signature=ab", "no Credential"),
    ("AWS4-HMAC-SHA256 garbage", "no Credential"),
    ("AWS AKIAIOSFODNN7EXAMPLE", "SigV2"),
    ("AWS4-HMAC-SHA256 Credential=AKIA<script>/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=a",
     "unexpected characters"),
])
def test_bad_authorization_is_an_anomaly(authorization, problem):
    ex = exchange("GET", "http://10.0.0.9:9000/models/m.pt",
                  {"Authorization": authorization, "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    obj, anomalies = run(ex)
    assert events(anomalies) == ["s3_bad_authorization"] and problem in anomalies[0][1]
    assert (obj["operation"], obj["bucket"], obj["anonymous"]) == ("GetObject", "models", False)
    assert "Signature=ab" not in json.dumps(obj)


def test_bad_presigned_credential():
    url = "http://10.0.0.9/models/m.pt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2Fs3"
    obj, anomalies = run(exchange("GET", url, {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}))
    assert events(anomalies) == ["s3_bad_presigned_url"] and obj["auth"] == "presigned_v4"


def test_bad_header_values_and_long_keys():
    obj, anomalies = run(exchange("PUT", "http://10.0.0.9/b/" + "k" * 1500,
                                  {"x-amz-decoded-content-length": "12abc", "x-amz-content-sha256": "nothex"}))
    assert events(anomalies) == ["s3_key_too_long", "s3_bad_decoded_length"]
    assert len(obj["key"]) == 1024 and obj["payload_signing"] == "invalid"


def chunked_upload(body: bytes, declared: int, url: str = "https://b.s3.eu-west-2.amazonaws.com/m.pt",
                   signing: str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD") -> HttpExchange:
    headers = {"Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": str(declared),
               "x-amz-content-sha256": signing,
               "Authorization": "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20260101/eu-west-2/s3/aws4_request, "
                                "SignedHeaders=host;x-amz-content-sha256, Signature=aa"}
    return exchange("PUT", url, headers, body)


def signed_chunks(data: bytes, size: int) -> bytes:
    out = b""
    for start in range(0, len(data), size):
        chunk = data[start:start + size]
        out += b"%x;chunk-signature=%s\r\n%s\r\n" % (len(chunk), b"f" * 64, chunk)
    return out + b"0;chunk-signature=" + b"e" * 64 + b"\r\n\r\n"


def test_aws_chunked_upload_without_an_observer():
    data = torch_zip(pickle.dumps(Shell(), protocol=2))
    obj = s3_object(chunked_upload(signed_chunks(data, 100), len(data)))
    assert (obj["chunked"], obj["chunk_count"], obj["bytes"], obj["decoded_length"]) == (True, 4, len(data),
                                                                                         len(data))
    assert obj["payload_signing"] == "streaming_signed"
    assert obj["model"]["format"] == "torch_zip" and obj["model"]["pickle"]["dangerous"] == ["posix.system"]
    assert "f" * 64 not in json.dumps(obj)


def test_aws_chunked_sizes_that_lie():
    data = pickle.dumps({"a": 1}, protocol=4)
    obj, anomalies = run(chunked_upload(signed_chunks(data, 8), len(data) + 1000))
    assert events(anomalies) == ["s3_aws_chunked_length_mismatch"]
    assert (obj["bytes"], obj["decoded_length"]) == (len(data), len(data) + 1000)
    obj, anomalies = run(chunked_upload(b"ffff;chunk-signature=00\r\n" + data, 65535))
    assert events(anomalies) == ["s3_aws_chunked_truncated"] and obj["model"]["pickle"]["scan"] == "partial"
    obj, anomalies = run(chunked_upload(b"nothex\r\n" + data, len(data)))
    assert events(anomalies) == ["s3_aws_chunked_bad_size"] and obj["bytes"] == 0


def test_malformed_model_bodies_are_anomalies():
    header = b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}'
    truncated = struct.pack("<Q", 5000) + header
    obj, anomalies = run(signed("PUT", "https://b.s3.eu-west-2.amazonaws.com/w.safetensors", body=truncated))
    assert events(anomalies) == ["model_safetensors_header_truncated"]
    assert obj["model"]["safetensors"] == {"header_length": 5000, "header_valid": False}
    corrupt = bytearray(torch_zip(pickle.dumps({"a": 1}), b"\x00" * 64))
    second = corrupt.find(b"PK\x03\x04", 4)
    corrupt[second:second + 4] = b"\x00\x00\x00\x00"
    obj, anomalies = run(signed("PUT", "https://b.s3.eu-west-2.amazonaws.com/m.pt", body=bytes(corrupt)))
    assert events(anomalies) == ["model_zip_corrupt"] and obj["model"]["format"] == "torch_zip"


# --- the body observer, fed through the exchange builder ------------------------------------------


def feed_builder(ex: HttpExchange, splits: list[int], limits: Limits) -> HttpExchange:
    builder = ExchangeBuilder(limits, OBSERVER_FACTORIES)
    request = HttpMessage(kind="request", version="HTTP/1.1", headers=ex.request.headers, method=ex.request.method,
                          path=ex.request.path, authority=ex.request.authority)
    body = ex.request.body
    events_: list = [HeadReceived(stream_id=0, direction=TO_SERVER, message=request, end_stream=False, ts=1.0)]
    start = 0
    for cut in [*splits, len(body)]:
        events_.append(BodyReceived(stream_id=0, direction=TO_SERVER, data=body[start:cut], ts=1.0))
        start = cut
    events_.append(MessageEnded(stream_id=0, direction=TO_SERVER, trailers=[], ts=1.0))
    response = HttpMessage(kind="response", version="HTTP/1.1", headers=[("content-length", "0")], status=200)
    events_ += [HeadReceived(stream_id=0, direction=TO_CLIENT, message=response, end_stream=True, ts=2.0)]
    done = [item for item in builder.feed(events_) if isinstance(item, HttpExchange)]
    assert len(done) == 1
    return done[0]


def test_observer_counts_the_whole_body_while_only_a_prefix_is_kept():
    storage = bytes(range(256)) * 400  # 100 KiB of tensor bytes after data.pkl
    data = torch_zip(pickle.dumps(Shell(), protocol=2), storage)
    ex = chunked_upload(signed_chunks(data, 8192), len(data))
    limits = Limits(body_keep_bytes=4096)
    rng = random.Random(7)
    expected = None
    for _ in range(5):
        splits = sorted(rng.sample(range(1, len(ex.request.body)), 40))
        built = feed_builder(ex, splits, limits)
        observer = built.observations["s3.request"]
        assert isinstance(observer, AwsChunkedDecoder) and len(observer.decoded) == 4096
        assert built.request.body_truncated
        obj, anomalies = run(built)
        assert anomalies == []
        expected = expected or obj
        assert obj == expected
    assert (expected["bytes"], expected["object_size"], expected["chunk_count"]) == (len(data), len(data), 13)
    assert expected["model"]["pickle"] == {"scan": "partial", "scanned_bytes": len(pickle.dumps(Shell(), protocol=2)),
                                           "globals": ["posix.system"],
                                           "dangerous": ["posix.system"], "protocol": 2}


def test_observer_anomalies_come_out_once():
    data = pickle.dumps({"a": 1}, protocol=4)
    built = feed_builder(chunked_upload(signed_chunks(data, 8), 999), [3, 40], Limits())
    _, anomalies = run(built)
    assert events(anomalies) == ["s3_aws_chunked_length_mismatch"]
    assert s3.observer_for(built.response, Limits()) is None


# --- the field catalogue --------------------------------------------------------------------------


def produced_paths(obj: dict, prefix: str = "s3") -> set[str]:
    paths = {prefix}
    for key, value in obj.items():
        paths.add(f"{prefix}.{key}")
        if isinstance(value, dict):
            paths |= produced_paths(value, f"{prefix}.{key}")
    return paths


TYPE_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "list[string]": lambda v: isinstance(v, list) and all(isinstance(e, str) for e in v),
    "list[integer]": lambda v: isinstance(v, list) and all(isinstance(e, int) for e in v),
}


def values_by_path(obj: dict, prefix: str = "s3"):
    yield prefix, obj
    for key, value in obj.items():
        if isinstance(value, dict):
            yield from values_by_path(value, f"{prefix}.{key}")
        else:
            yield f"{prefix}.{key}", value


def test_declared_fields_and_produced_keys_agree():
    records: list[dict] = []
    Analyzer(records.append).analyze_file(S3_PCAP)
    objects = [r["s3"] for r in records if "s3" in r]
    objects.append(s3_object(signed("PUT", "https://p.s3.eu-west-2.amazonaws.com/l.pt",
                                    headers={"x-amz-copy-source": "/s/k"})))
    objects.append(s3_object(signed("GET", "https://s3.eu-west-2.amazonaws.com/models?prefix=m")))
    objects.append(s3_object(chunked_upload(signed_chunks(b"abc", 2), 3)))
    objects.append(s3_object(exchange("GET", "https://models.s3.amazonaws.com/p/m.pt", status=403,
                                      response_body=ACCESS_DENIED)))
    produced = set().union(*(produced_paths(o) for o in objects))
    declared = {name for name in fields.catalogue() if name == "s3" or name.startswith("s3.")}
    assert produced <= declared, produced - declared
    non_model = {name for name in declared if not name.startswith("s3.model")}
    assert non_model <= produced, non_model - produced
    catalogue = fields.catalogue()
    assert all(spec.events == ("s3",) for name, spec in catalogue.items() if name.startswith("s3"))
    for obj in objects:
        for path, value in values_by_path(obj):
            assert TYPE_CHECKS[catalogue[path].type](value), (path, value)


# --- never raises ---------------------------------------------------------------------------------

HEADER_NAMES = ["authorization", "x-amz-content-sha256", "x-amz-security-token", "x-amz-copy-source",
                "x-amz-decoded-content-length", "content-encoding", "range", "x-amz-region-set", "host"]
AUTH_VALUES = st.sampled_from(["AWS4-HMAC-SHA256 ", "AWS ", "AWS4-ECDSA-P256-SHA256 ", "Bearer ", ""]).flatmap(
    lambda scheme: st.text(max_size=120).map(lambda rest: scheme + rest))
HOSTS = st.sampled_from(["s3.amazonaws.com", "b.s3.us-east-1.amazonaws.com", "minio:9000", "10.0.0.1",
                         "x.s3-accesspoint.eu-west-1.amazonaws.com", ""])
BODIES = st.one_of(st.binary(max_size=300), st.sampled_from([
    b"<Error><Code>", ACCESS_DENIED, b"5\r\nhello\r\n0\r\n\r\n", b"\x80\x04\x95", b"PK\x03\x04", b"GGUF\x03"]))


@settings(max_examples=400, deadline=None)
@given(method=st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"]), host=HOSTS,
       path=st.text(max_size=80), query=st.text(max_size=80), auth=AUTH_VALUES,
       headers=st.lists(st.tuples(st.sampled_from(HEADER_NAMES), st.text(max_size=60)), max_size=6),
       body=BODIES, status=st.none() | st.integers(100, 599), response_body=BODIES,
       response_headers=st.lists(st.tuples(st.sampled_from(["server", "x-amz-request-id", "x-amz-id-2",
                                                            "content-range", "content-length"]),
                                           st.text(max_size=40)), max_size=4))
def test_build_never_raises(method, host, path, query, auth, headers, body, status, response_body, response_headers):
    request_headers = [("host", host), ("authorization", auth), *headers]
    target = "/" + path + ("?" + query if query else "")
    request = message("request", request_headers, body, method=method, path=target, authority=host)
    response = None if status is None else message("response", response_headers, response_body, status=status)
    record, anomalies = transaction_record(None, HttpExchange(request=request, response=response, stream_id=0))
    json.dumps(record)
    assert all(event.startswith(("s3_", "model_")) for layer, event, _ in anomalies if layer == "s3")
