"""The `s3` layer: S3 REST requests (AWS, MinIO, Ceph, moto...) and the model files they move.

Recognition needs no list of endpoints. An exchange is S3 when any of these holds (the record's
`s3.detected_by` lists which):

* ``signature``: a SigV4 / SigV4A `Authorization` or presigned `X-Amz-Credential` whose scope
  names the `s3` (or `s3express`) service, or a SigV2 `AWS <key id>:<signature>` header or
  `AWSAccessKeyId` + `Signature` query (SigV2 is S3's alone today);
* ``host``: an AWS S3 endpoint name (`s3.<region>.amazonaws.com`, `<bucket>.s3...`, legacy,
  dualstack, FIPS, accelerate, website, access point, VPC endpoint, `.amazonaws.com.cn`);
* ``headers``: request headers only S3 clients send (`x-amz-content-sha256`,
  `x-amz-copy-source`, `x-amz-decoded-content-length`, `Content-Encoding: aws-chunked`);
* ``response``: `Server: AmazonS3` or `MinIO`, both `x-amz-request-id` and `x-amz-id-2`, or an
  XML body in the S3 namespace.

A SigV4 scope naming another service (sts, sqs...) is not S3, whatever else the request
carries. An anonymous request to a custom host (a MinIO on `minio.internal:9000`) is recognised
only by its response markers; with no response in the capture it is not.

Bucket and key: the bucket is in the host for virtual-hosted AWS names, else it is the first path
segment (path style: custom endpoints are taken as path style, the SDKs' default for them), except
when only the response says S3 on a custom DNS name that is not MinIO (a CNAME'd bucket or a CDN
with an S3 origin): then the bucket is unknown and the whole path is the key. The key is
percent-decoded. Model files in request bodies (PutObject, first UploadPart) and response
bodies (GetObject from byte 0) go through inspector.protocols.modelfile; aws-chunked uploads are
de-chunked first (inspector.protocols.awschunked, as a body observer over the whole body).

Secrets: the access key id is logged (it identifies, it does not authenticate); signatures,
session tokens and chunk signatures never are.
"""

from __future__ import annotations

import re
from typing import Any

from inspector.fields import declare
from inspector.http import HttpExchange, HttpMessage
from inspector.limits import Limits
from inspector.protocols import s3wire as wire
from inspector.protocols.awschunked import AwsChunkedDecoder, decode_aws_chunked
from inspector.protocols.modelfile import inspect_model, model_fields

LAYER = "s3"
OBSERVATION_REQUEST = "s3.request"
CNAME = "cname"

#: Keys listed from DeleteObjects requests and listing responses, bucket names from ListBuckets.
MAX_LISTED = 32
MAX_VALUE_CHARS = 256

_S3_SERVICES = frozenset({"s3", "s3express"})
_S3_REQUEST_HEADERS = ("x-amz-content-sha256", "x-amz-copy-source", "x-amz-decoded-content-length")
_WANTED_HEADERS = frozenset({
    "authorization", "x-amz-content-sha256", "x-amz-security-token", "x-amz-copy-source",
    "x-amz-decoded-content-length", "content-encoding", "range", "x-amz-region-set",
})
_UPLOADS = frozenset({"PutObject", "UploadPart"})
_MODEL_OPERATIONS = frozenset({"GetObject", "HeadObject", "PutObject", "UploadPart", "CreateMultipartUpload",
                               "CompleteMultipartUpload", "CopyObject", "UploadPartCopy"})
_LISTINGS = frozenset({"ListObjectsV2", "ListObjects", "ListObjectVersions"})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


# --- body observer ----------------------------------------------------------------------------


def observer_for(message: HttpMessage, limits: Limits) -> AwsChunkedDecoder | None:
    """An aws-chunked decoder for request bodies that use that framing."""
    if message.kind != "request" or not _is_aws_chunked(message):
        return None
    declared, _ = _int_header(message.header("x-amz-decoded-content-length"))
    return AwsChunkedDecoder(limits, declared_length=declared)


def _is_aws_chunked(message: HttpMessage) -> bool:
    encoding = message.header("content-encoding")
    if encoding is not None and "aws-chunked" in encoding.lower():
        return True
    content_sha256 = message.header("x-amz-content-sha256")
    return content_sha256 is not None and content_sha256.startswith("STREAMING-")


# --- the layer ----------------------------------------------------------------------------------


def build(ctx: Any) -> dict[str, Any] | None:
    exchange: HttpExchange = ctx.exchange
    request = exchange.request
    if request is None or "grpc" in ctx.record:
        return None
    headers: dict[str, str] = {}
    for name, value in request.headers:
        if name in _WANTED_HEADERS:
            headers.setdefault(name, value)
    raw_path, query = wire.split_path(request.path)
    params = wire.parse_query(query) if query else {}
    credential = _credential(headers, params)
    if credential is not None and credential.service is not None and credential.service not in _S3_SERVICES:
        return None  # another AWS service
    host = ctx.record.get("http", {}).get("hostname", "")
    aws_host = wire.aws_s3_host(host)
    response = exchange.response
    evidence = _evidence(credential, aws_host, headers, request, response)
    if not evidence:
        return None
    obj: dict[str, Any] = {}
    bucket, key, addressing = _bucket_and_key(raw_path, aws_host, host, evidence, response)
    named = "" if addressing == CNAME else bucket  # a custom domain names a bucket we cannot see
    op = wire.operation(request.method, named, key, params, "x-amz-copy-source" in headers)
    obj["operation"] = op
    if bucket is not None:
        obj["bucket"] = bucket[:MAX_VALUE_CHARS]
    if key is not None:
        if len(key) > wire.MAX_KEY_CHARS:
            ctx.anomaly("s3_key_too_long", f"object key of {len(key)} characters (S3 allows 1024 bytes)")
        obj["key"] = key[:wire.MAX_KEY_CHARS]
    if bucket is not None or addressing == CNAME:
        obj["addressing"] = addressing
    _auth_fields(ctx, obj, credential, aws_host, headers, params)
    range_header = headers.get("range")
    if range_header is not None:
        obj["range"] = range_header[:MAX_VALUE_CHARS]
    if response is not None:
        obj["status"] = response.status
        _response_fields(obj, response)
    chunked = _chunked(ctx, obj, exchange, request, headers)
    _transfer_fields(obj, op, request, response, chunked)
    _multipart_fields(obj, op, params, request, response)
    _listing_fields(obj, op, params, request, response)
    copy_source = headers.get("x-amz-copy-source")
    if copy_source is not None:
        obj["copy_source"] = wire.decode_key(copy_source)[:wire.MAX_KEY_CHARS]
    if op in _MODEL_OPERATIONS:
        _model(ctx, obj, op, key, request, response, chunked)
    obj["detected_by"] = evidence
    return obj


def _credential(headers: dict[str, str], params: dict[str, str]) -> wire.Credential | None:
    authorization = headers.get("authorization")
    if authorization is not None:
        credential = wire.authorization_credential(authorization)
        if credential is not None:
            return credential
    return wire.query_credential(params) if params else None


def _evidence(credential: wire.Credential | None, aws_host: wire.AwsHost | None, headers: dict[str, str],
              request: HttpMessage, response: HttpMessage | None) -> list[str]:
    evidence = []
    if credential is not None and (credential.service in _S3_SERVICES
                                   or credential.auth in (wire.SIGV2, wire.PRESIGNED_V2)):
        evidence.append("signature")
    if aws_host is not None:
        evidence.append("host")
    if any(name in headers for name in _S3_REQUEST_HEADERS) or _is_aws_chunked(request):
        evidence.append("headers")
    if response is not None and _s3_response(response):
        evidence.append("response")
    return evidence


def _s3_response(response: HttpMessage) -> bool:
    server = (response.header("server") or "").lower()
    if server.startswith(("amazons3", "minio")):
        return True
    if response.header("x-amz-request-id") is not None and response.header("x-amz-id-2") is not None:
        return True
    return wire.S3_XML_NAMESPACE in response.body[:1024]


def _bucket_and_key(raw_path: str, aws_host: wire.AwsHost | None, host: str, evidence: list[str],
                    response: HttpMessage | None) -> tuple[str | None, str | None, str]:
    """`(bucket, key, addressing)`: virtual (bucket in an AWS host name), path, or cname.

    cname: only the response says S3 and the host is a custom DNS name that is not MinIO: a
    bucket behind a CNAME, a CDN (CloudFront, Cloudflare) or a website endpoint. The path is
    then the whole key and the bucket is unknown.
    """
    path = raw_path[1:] if raw_path.startswith("/") else raw_path
    if aws_host is not None and aws_host.bucket is not None:
        return aws_host.bucket, wire.decode_key(path) or None, "virtual"
    if (aws_host is None and evidence == ["response"] and response is not None and not wire.is_ip_or_local(host)
            and not (response.header("server") or "").lower().startswith("minio")):
        return None, wire.decode_key(path) or None, CNAME
    bucket, _, key = path.partition("/")
    return wire.decode_key(bucket) or None, wire.decode_key(key) or None, "path"


def _auth_fields(ctx: Any, obj: dict[str, Any], credential: wire.Credential | None,
                 aws_host: wire.AwsHost | None, headers: dict[str, str], params: dict[str, str]) -> None:
    region = None
    if credential is not None:
        region = credential.region
        if credential.problem is not None:
            event = "s3_bad_presigned_url" if credential.auth.startswith("presigned") else "s3_bad_authorization"
            ctx.anomaly(event, credential.problem)
    if region is None and aws_host is not None:
        region = aws_host.region
    if region is None and "x-amz-region-set" in headers:
        region = headers["x-amz-region-set"][:64]
    if region is not None:
        obj["region"] = region
    if credential is None:
        obj["auth"] = wire.ANONYMOUS
        obj["credential_type"] = wire.ANONYMOUS
        obj["anonymous"] = True
    else:
        obj["auth"] = credential.auth
        if credential.access_key_id is not None:
            obj["access_key_id"] = credential.access_key_id
        obj["credential_type"] = wire.credential_type(credential.access_key_id)
        obj["anonymous"] = False
    obj["session_token"] = "x-amz-security-token" in headers or "x-amz-security-token" in params
    expires = params.get("x-amz-expires")
    if expires is not None and expires.isascii() and expires.isdigit() and len(expires) <= 12:
        obj["presign_expires"] = int(expires)
    signing = wire.payload_signing(headers.get("x-amz-content-sha256"))
    if signing is not None:
        obj["payload_signing"] = signing


def _response_fields(obj: dict[str, Any], response: HttpMessage) -> None:
    error = wire.xml_error(response.body) if response.body[:1] in (b"<", b" ", b"\n", b"\r", b"\t") else None
    if error is not None:
        obj["error_code"], message = error
        if message is not None:
            obj["error_message"] = message
    request_id = response.header("x-amz-request-id") or response.header("x-amzn-requestid")
    if request_id is not None:
        obj["request_id"] = request_id[:128]


def _chunked(ctx: Any, obj: dict[str, Any], exchange: HttpExchange, request: HttpMessage,
             headers: dict[str, str]) -> AwsChunkedDecoder | None:
    declared, bad = _int_header(headers.get("x-amz-decoded-content-length"))
    if bad:
        ctx.anomaly("s3_bad_decoded_length", "x-amz-decoded-content-length is not a byte count")
    if not _is_aws_chunked(request):
        return None
    decoder = exchange.observations.get(OBSERVATION_REQUEST)
    if not isinstance(decoder, AwsChunkedDecoder):
        # No observer saw the body (built by hand, or the body never ended): decode the prefix.
        decoder = decode_aws_chunked(request.body, declared_length=declared,
                                     body_complete=request.complete and not request.body_truncated)
        for anomaly in decoder.anomalies:
            ctx.anomaly(anomaly.event, anomaly.message)
    obj["chunked"] = True
    if declared is not None:
        obj["decoded_length"] = declared
    obj["chunk_count"] = decoder.chunk_count
    return decoder


def _transfer_fields(obj: dict[str, Any], op: str, request: HttpMessage, response: HttpMessage | None,
                     chunked: AwsChunkedDecoder | None) -> None:
    if op in _UPLOADS:
        sent = chunked.decoded_length if chunked is not None else request.body_length
        obj["bytes"] = sent
        if op == "PutObject":
            whole = chunked is None or chunked.complete
            obj["object_size"] = sent if whole or chunked is None else (chunked.declared_length or sent)
        return
    if response is None or not 200 <= response.status < 300:
        return
    if op == "GetObject":
        obj["bytes"] = response.body_length
    if op in ("GetObject", "HeadObject"):
        size = _object_size(response, op)
        if size is not None:
            obj["object_size"] = size


def _object_size(response: HttpMessage, op: str) -> int | None:
    content_range = _content_range(response)
    if content_range is not None:
        return content_range[2]
    length, _ = _int_header(response.header("content-length"))
    if length is not None:
        return length
    if op == "GetObject" and response.status == 200 and response.complete:
        return response.body_length
    return None


def _content_range(response: HttpMessage) -> tuple[int, int, int | None] | None:
    value = response.header("content-range")
    match = _CONTENT_RANGE.match(value) if value and len(value) < 128 else None
    if match is None:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


def _multipart_fields(obj: dict[str, Any], op: str, params: dict[str, str], request: HttpMessage,
                      response: HttpMessage | None) -> None:
    upload_id = params.get("uploadid")
    if upload_id is None and op == "CreateMultipartUpload" and response is not None:
        found = wire.xml_values(response.body, "UploadId", 1)
        upload_id = found[0] if found else None
    if upload_id:
        obj["upload_id"] = upload_id[:MAX_VALUE_CHARS]
    part = params.get("partnumber")
    if part is not None and part.isascii() and part.isdigit() and len(part) <= 6:
        obj["part_number"] = int(part)
    if op == "CompleteMultipartUpload":
        obj["part_count"] = wire.xml_count(request.body, "PartNumber")


def _listing_fields(obj: dict[str, Any], op: str, params: dict[str, str], request: HttpMessage,
                    response: HttpMessage | None) -> None:
    if op == "DeleteObjects":
        obj["object_count"] = wire.xml_count(request.body, "Object")
        obj["keys"] = [k[:wire.MAX_KEY_CHARS] for k in wire.xml_values(request.body, "Key", MAX_LISTED)]
        return
    ok = response is not None and 200 <= response.status < 300
    if op in _LISTINGS:
        prefix = params.get("prefix")
        if prefix:
            obj["prefix"] = prefix[:wire.MAX_KEY_CHARS]
        if ok and response is not None:
            obj["object_count"] = wire.xml_count(response.body, "Contents") + wire.xml_count(response.body, "Version")
            obj["keys"] = [k[:wire.MAX_KEY_CHARS] for k in wire.xml_values(response.body, "Key", MAX_LISTED)]
    elif op == "ListBuckets" and ok and response is not None:
        obj["buckets"] = [b[:MAX_VALUE_CHARS] for b in wire.xml_values(response.body, "Name", MAX_LISTED)]


def _model(ctx: Any, obj: dict[str, Any], op: str, key: str | None, request: HttpMessage,
           response: HttpMessage | None, chunked: AwsChunkedDecoder | None) -> None:
    body = b""
    seen = complete = False
    total = obj.get("object_size")
    if op in _UPLOADS:
        # A part is a slice of the object: part 1 starts it (magic), none is the whole object.
        seen = op == "PutObject" or obj.get("part_number") == 1
        if chunked is not None:
            body = bytes(chunked.decoded)
            complete = request.complete and not request.body_truncated and not chunked.truncated
        else:
            body = request.body
            complete = request.complete and not request.body_truncated
        complete = complete and op == "PutObject"
    elif op == "GetObject" and response is not None and 200 <= response.status < 300:
        body = response.body
        content_range = _content_range(response)
        seen = response.status == 200 or (content_range is not None and content_range[0] == 0)
        whole = content_range is None or (content_range[2] is not None and content_range[1] + 1 == content_range[2])
        complete = response.complete and not response.body_truncated and whole
    model = inspect_model(body, name=key, body_complete=complete, body_seen=seen,
                          total_size=total if complete or op == "GetObject" else None)
    if model is None:
        return
    for event, message in model.anomalies:
        ctx.anomaly(event, message)
    obj["model"] = model.record()


def _int_header(value: str | None) -> tuple[int | None, bool]:
    """`(value, malformed)` of a non-negative integer header."""
    if value is None:
        return None, False
    text = value.strip()
    if text.isascii() and text.isdigit() and len(text) <= 19:
        return int(text), False
    return None, True


# --- field catalogue ----------------------------------------------------------------------------

declare(LAYER, [
    ("s3", "object", "S3 REST request (AWS, MinIO, Ceph, ...): see docs/protocols/s3.md."),
    ("s3.operation", "string", "S3 API operation: GetObject, PutObject, ListObjectsV2, UploadPart, ... or Unknown."),
    ("s3.bucket", "string", "Bucket (from the host for virtual-hosted requests, else the first path segment)."),
    ("s3.key", "string", "Object key, percent-decoded (first 1024 characters)."),
    ("s3.addressing", "string", "virtual (bucket in an AWS host name), path, or cname (a custom domain or CDN "
                                "in front of S3: bucket unknown, the path is the key); absent for service calls."),
    ("s3.region", "string", "Region from the credential scope, else from the host."),
    ("s3.auth", "string", "sigv4, sigv4a, sigv2, presigned_v4, presigned_v2 or anonymous."),
    ("s3.access_key_id", "string", "Access key id from the Authorization header or the presigned query."),
    ("s3.credential_type", "string", "long_term (AKIA), temporary (ASIA, STS), other (non-AWS ids) or anonymous."),
    ("s3.anonymous", "boolean", "No signature at all (no Authorization, no presigned query)."),
    ("s3.session_token", "boolean", "An x-amz-security-token header or query parameter is present."),
    ("s3.presign_expires", "integer", "X-Amz-Expires of a presigned URL, in seconds."),
    ("s3.payload_signing", "string", "From x-amz-content-sha256: signed, unsigned, streaming_signed, "
                                     "streaming_unsigned_trailer, ... or invalid."),
    ("s3.range", "string", "Range request header."),
    ("s3.status", "integer", "Response status."),
    ("s3.error_code", "string", "Code of an S3 XML error body (AccessDenied, NoSuchKey, ...)."),
    ("s3.error_message", "string", "Message of an S3 XML error body."),
    ("s3.request_id", "string", "x-amz-request-id (or x-amzn-requestid) of the response, to find the call "
                                "in CloudTrail or server logs."),
    ("s3.bytes", "integer", "Object bytes moved: the upload's decoded body, or the download's response body."),
    ("s3.object_size", "integer", "Whole object size when known (Content-Range total, Content-Length, upload)."),
    ("s3.upload_id", "string", "Multipart upload id (query, or the CreateMultipartUpload response)."),
    ("s3.part_number", "integer", "UploadPart / UploadPartCopy part number."),
    ("s3.part_count", "integer", "Parts listed in a CompleteMultipartUpload request."),
    ("s3.copy_source", "string", "x-amz-copy-source of CopyObject / UploadPartCopy, percent-decoded."),
    ("s3.prefix", "string", "prefix parameter of a listing."),
    ("s3.object_count", "integer", "Objects in a DeleteObjects request or a listing response."),
    ("s3.keys", "list[string]", "First 32 keys of a DeleteObjects request or a listing response."),
    ("s3.buckets", "list[string]", "First 32 bucket names of a ListBuckets response."),
    ("s3.chunked", "boolean", "The upload uses aws-chunked framing (streaming SigV4)."),
    ("s3.decoded_length", "integer", "x-amz-decoded-content-length: the object size the client declares."),
    ("s3.chunk_count", "integer", "aws-chunked data chunks seen."),
    ("s3.detected_by", "list[string]", "Why this is S3: signature, host, headers, response."),
    *model_fields("s3.model"),
])
