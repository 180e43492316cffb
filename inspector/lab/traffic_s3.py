"""S3 traffic: requests signed by botocore's SigV4 signer (fixed clock and keys), answers shaped like S3's.

`s3_request` builds the request a boto3 client sends: botocore's `S3SigV4Auth` signs an
`AWSRequest` (x-amz-date, x-amz-content-sha256, Authorization) with the identity's keys and a
fixed clock, so the bytes are reproducible; `identity=None` is an anonymous (unsigned) request.
Virtual-hosted addressing puts the bucket in the Host name, path style in the path.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from inspector.lab.traffic_http import request_bytes, response_bytes

SIGNING_TIME = datetime.datetime(2026, 1, 1, 0, 0, 0)
REGION = "us-east-1"


@dataclass(frozen=True, kw_only=True)
class S3Identity:
    """An access key (AKIA...: long-term; ASIA... with a session token: STS)."""

    access_key: str
    secret_key: str = "lab-secret-key-not-a-real-one/0000000000"
    session_token: str | None = None


@contextmanager
def _fixed_clock() -> Iterator[None]:
    """botocore reads the signing time from botocore.auth.get_current_datetime: pin it."""
    real = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda *_: SIGNING_TIME
    try:
        yield
    finally:
        botocore.auth.get_current_datetime = real


def host_and_path(bucket: str, key: str, *, style: str = "virtual", region: str = REGION) -> tuple[str, str]:
    """(Host, path) of an object under virtual-hosted or path-style addressing."""
    encoded = quote(key, safe="/~")
    if style == "virtual":
        return f"{bucket}.s3.{region}.amazonaws.com", f"/{encoded}"
    return f"s3.{region}.amazonaws.com", f"/{bucket}/{encoded}" if key else f"/{bucket}"


def s3_request(method: str, bucket: str, key: str = "", *, body: bytes = b"", query: str = "",
               identity: S3Identity | None, style: str = "virtual", region: str = REGION,
               headers: dict[str, str] | None = None) -> bytes:
    """One S3 REST request as wire bytes (signed by botocore unless `identity` is None)."""
    host, path = host_and_path(bucket, key, style=style, region=region)
    target = f"{path}?{query}" if query else path
    all_headers = dict(headers or {})
    if identity is not None:
        request = AWSRequest(method=method, url=f"http://{host}{target}", data=body, headers=all_headers)
        credentials = Credentials(identity.access_key, identity.secret_key, identity.session_token)
        with _fixed_clock():
            botocore.auth.S3SigV4Auth(credentials, "s3", region).add_auth(request)
        all_headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    all_headers.setdefault("User-Agent", "Boto3/1.44.8 md/Botocore#1.44.8 ua/2.1 os/linux lang/python#3.12.3")
    return request_bytes(method, target, host, list(all_headers.items()), body)


def _request_id(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:16].upper()


def s3_ok(body: bytes = b"", *, content_type: str | None = None, seed: str = "", status: int = 200,
          headers: dict[str, str] | None = None) -> bytes:
    """A successful answer with the x-amz-request-id and ETag S3 sends."""
    extra = {"x-amz-request-id": _request_id(seed or body.hex()[:64]),
             "ETag": f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"', **(headers or {})}
    return response_bytes(status, body, content_type, list(extra.items()))


def s3_object(body: bytes, *, content_type: str = "application/octet-stream") -> bytes:
    return s3_ok(body, content_type=content_type)


def s3_error(code: str, message: str, status: int = 403, *, seed: str = "") -> bytes:
    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
           f"<RequestId>{_request_id(seed or code)}</RequestId></Error>").encode()
    return response_bytes(status, xml, "application/xml", [("x-amz-request-id", _request_id(seed or code))])


def create_multipart_answer(bucket: str, key: str, upload_id: str) -> bytes:
    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult '
           f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>{bucket}</Bucket><Key>{key}</Key>'
           f"<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>").encode()
    return s3_ok(xml, content_type="application/xml", seed=upload_id)
