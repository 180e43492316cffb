"""S3 REST wire facts: endpoint host names, credentials (SigV4, SigV2, presigned), operations, XML.

Pure functions over strings, used by the `s3` layer (inspector.protocols.s3). Sources: the S3 API
reference (REST operation list, "Virtual hosting of buckets", "Authenticating Requests (AWS
Signature Version 4)", "Authenticating Requests: Using Query Parameters", "Signature Version 2")
and the AWS regional endpoint list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

#: Longest key S3 accepts is 1024 bytes; longer is cut (and reported).
MAX_KEY_CHARS = 1024
MAX_TEXT = 256
#: Query strings longer than this are only partly parsed.
MAX_QUERY_CHARS = 16 * 1024
MAX_QUERY_PARAMS = 256

# --- hosts --------------------------------------------------------------------------------------

_REGION = r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}"
_REGION_RE = re.compile(rf"^{_REGION}$")
_REGION_SUFFIX_RE = re.compile(rf"(?:^|-)({_REGION})$")
#: The endpoint label: s3, s3-<region> (legacy), s3-fips, s3-accelerate, s3-external-1,
#: s3-website-<region>, s3-accesspoint, s3-object-lambda, s3express-<zone>.
_S3_LABEL_RE = re.compile(r"^s3(?:express)?(?:-[a-z0-9-]+)?$")
_AWS_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn")
_IPV4_RE = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


@dataclass(frozen=True, slots=True)
class AwsHost:
    """An AWS S3 endpoint host: the bucket it names (virtual-hosted) and its region."""

    bucket: str | None
    region: str | None


def aws_s3_host(host: str) -> AwsHost | None:
    """Parse `host` (lower-case, no port) when it is an AWS S3 endpoint, else None.

    `s3.amazonaws.com`, `s3.<region>.amazonaws.com`, `s3-<region>.amazonaws.com`,
    `s3.dualstack.<region>...`, `s3-fips...`, `s3-accelerate...`, `s3-website...`, access points,
    `*.vpce.amazonaws.com` interface endpoints, and `.amazonaws.com.cn`; any labels before the
    endpoint label are the bucket (virtual-hosted style).
    """
    if not host.endswith(_AWS_SUFFIXES):
        return None
    labels = host.split(".")
    suffix_len = 3 if host.endswith(".cn") else 2
    body = labels[:-suffix_len]
    endpoint = None
    for index in range(len(body) - 1, -1, -1):
        if _S3_LABEL_RE.match(body[index]):
            endpoint = index
            break
    if endpoint is None:
        return None
    region = None
    for label in body[endpoint + 1:]:
        if _REGION_RE.match(label):
            region = label
            break
    if region is None:
        found = _REGION_SUFFIX_RE.search(body[endpoint])
        region = found.group(1) if found else None
    bucket_labels = body[:endpoint]
    if bucket_labels and bucket_labels[-1].startswith("vpce-"):
        bucket_labels = bucket_labels[:-1]  # bucket.vpce-<id>.s3.<region>.vpce.amazonaws.com
    return AwsHost(".".join(bucket_labels) or None, region)


def is_ip_or_local(host: str) -> bool:
    return not host or host == "localhost" or "." not in host or ":" in host or bool(_IPV4_RE.match(host))


# --- credentials --------------------------------------------------------------------------------

SIGV4, SIGV4A, SIGV2 = "sigv4", "sigv4a", "sigv2"
PRESIGNED_V4, PRESIGNED_V2, ANONYMOUS = "presigned_v4", "presigned_v2", "anonymous"
_SIGV4_SCHEMES = {"aws4-hmac-sha256": SIGV4, "aws4-ecdsa-p256-sha256": SIGV4A}
_DATE_RE = re.compile(r"^\d{8}$")
_ACCESS_KEY_RE = re.compile(r"^[\w+=,.@-]{1,128}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """Who signed a request. `problem` says what was malformed (the fields hold what could be read)."""

    auth: str
    access_key_id: str | None = None
    region: str | None = None
    service: str | None = None
    problem: str | None = None


def authorization_credential(value: str) -> Credential | None:
    """The credential of an AWS `Authorization` header; None when the scheme is not AWS's."""
    scheme, _, params = value.strip().partition(" ")
    auth = _SIGV4_SCHEMES.get(scheme.lower())
    if auth is not None:
        return _sigv4_header(auth, params)
    if scheme == "AWS":
        access_key, sep, signature = params.strip().partition(":")
        if not sep or not access_key or not signature:
            return Credential(auth=SIGV2, problem="SigV2 Authorization is not 'AWS <key id>:<signature>'")
        return _with_key(Credential(auth=SIGV2), access_key)
    return None


def _sigv4_header(auth: str, params: str) -> Credential:
    fields: dict[str, str] = {}
    for part in params.split(","):
        name, sep, val = part.strip().partition("=")
        if sep:
            fields[name.strip().lower()] = val.strip()
    missing = [n for n in ("credential", "signedheaders", "signature") if n not in fields]
    credential = scope_credential(auth, fields.get("credential", ""))
    if missing and credential.problem is None:
        return _replace(credential, problem=f"Authorization lacks {', '.join(missing)}")
    return credential


def scope_credential(auth: str, scope: str) -> Credential:
    """`<key id>/<yyyymmdd>/<region>/<service>/aws4_request` (SigV4A has no region part)."""
    parts = scope.split("/")
    if not scope:
        return Credential(auth=auth, problem="no Credential")
    region_part = 0 if auth == SIGV4A else 1
    expected = 4 + region_part
    key = parts[0]
    if len(parts) != expected or parts[-1] != "aws4_request" or not _DATE_RE.match(parts[1]):
        service = next((p for p in parts[1:] if p in ("s3", "s3express")), None)
        return _with_key(Credential(auth=auth, service=service,
                                    problem=f"credential scope is not <key>/<date>/"
                                            f"{'' if auth == SIGV4A else '<region>/'}<service>/aws4_request"), key)
    region = parts[2][:64] if region_part else None
    return _with_key(Credential(auth=auth, region=region, service=parts[-2][:64]), key)


def _with_key(credential: Credential, key: str) -> Credential:
    if _ACCESS_KEY_RE.match(key):
        return _replace(credential, access_key_id=key)
    problem = credential.problem or "access key id has unexpected characters"
    return _replace(credential, access_key_id=key[:128] if key else None, problem=problem)


def _replace(credential: Credential, **changes: str | None) -> Credential:
    values = {"auth": credential.auth, "access_key_id": credential.access_key_id, "region": credential.region,
              "service": credential.service, "problem": credential.problem}
    values.update(changes)
    return Credential(**values)  # type: ignore[arg-type]


def query_credential(params: dict[str, str]) -> Credential | None:
    """Presigned-URL credentials from the query (names matched case-insensitively)."""
    scope = params.get("x-amz-credential")
    if scope is not None:
        algorithm = params.get("x-amz-algorithm", "AWS4-HMAC-SHA256").lower()
        auth = PRESIGNED_V4
        credential = scope_credential(SIGV4A if algorithm == "aws4-ecdsa-p256-sha256" else SIGV4, scope)
        credential = _replace(credential, auth=auth)
        if "x-amz-signature" not in params and credential.problem is None:
            credential = _replace(credential, problem="presigned URL without X-Amz-Signature")
        return credential
    key = params.get("awsaccesskeyid")
    if key is not None and "signature" in params:
        return _with_key(Credential(auth=PRESIGNED_V2), key)
    return None


def credential_type(access_key_id: str | None) -> str:
    """long_term (AKIA...), temporary (ASIA..., STS), other (non-AWS key ids: MinIO, Ceph...)."""
    if not access_key_id:
        return "other"
    prefix = access_key_id[:4]
    if prefix == "AKIA":
        return "long_term"
    if prefix == "ASIA":
        return "temporary"
    return "other"


#: x-amz-content-sha256 values that name a payload mode (otherwise it is the payload's hash).
PAYLOAD_MODES = {
    "UNSIGNED-PAYLOAD": "unsigned",
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER": "streaming_unsigned_trailer",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD": "streaming_signed",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER": "streaming_signed_trailer",
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD": "streaming_signed_sigv4a",
    "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER": "streaming_signed_sigv4a_trailer",
}
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def payload_signing(content_sha256: str | None) -> str | None:
    if content_sha256 is None:
        return None
    value = content_sha256.strip()
    mode = PAYLOAD_MODES.get(value)
    if mode is not None:
        return mode
    return "signed" if _SHA256_HEX.match(value) else "invalid"


# --- query, path, operations --------------------------------------------------------------------


def parse_query(query: str) -> dict[str, str]:
    """Query parameters, names lower-cased, values percent-decoded; first value wins; capped."""
    params: dict[str, str] = {}
    for pair in query[:MAX_QUERY_CHARS].split("&")[:MAX_QUERY_PARAMS]:
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = unquote(name.replace("+", " "), errors="replace").lower()
        params.setdefault(name, unquote(value.replace("+", " "), errors="replace"))
    return params


def split_path(path: str) -> tuple[str, str]:
    """`(raw path, query)` of a request target (origin or absolute form)."""
    if path.startswith(("http://", "https://")):
        after_scheme = path.split("//", 1)[1]
        slash = after_scheme.find("/")
        path = after_scheme[slash:] if slash >= 0 else "/"
    raw, _, query = path.partition("?")
    raw = raw.partition("#")[0]
    return raw, query


def decode_key(raw: str) -> str:
    return unquote(raw, errors="replace")


#: Object-level (bucket and key) operations: method -> ((query subresource, operation), ...).
#: The first subresource present wins; `None` is the default.
OBJECT_OPERATIONS: dict[str, tuple[tuple[str | None, str], ...]] = {
    "GET": (("uploadid", "ListParts"), ("acl", "GetObjectAcl"), ("tagging", "GetObjectTagging"),
            ("retention", "GetObjectRetention"), ("legal-hold", "GetObjectLegalHold"),
            ("attributes", "GetObjectAttributes"), ("torrent", "GetObjectTorrent"), (None, "GetObject")),
    "HEAD": ((None, "HeadObject"),),
    "PUT": (("uploadid", "UploadPart"), ("acl", "PutObjectAcl"), ("tagging", "PutObjectTagging"),
            ("retention", "PutObjectRetention"), ("legal-hold", "PutObjectLegalHold"), (None, "PutObject")),
    "POST": (("uploads", "CreateMultipartUpload"), ("uploadid", "CompleteMultipartUpload"),
             ("restore", "RestoreObject"), ("select", "SelectObjectContent")),
    "DELETE": (("uploadid", "AbortMultipartUpload"), ("tagging", "DeleteObjectTagging"), (None, "DeleteObject")),
}

#: Bucket subresources shared by GET (Get...), PUT (Put...) and DELETE (Delete...).
_BUCKET_CONFIG = (
    ("policy", "BucketPolicy"), ("acl", "BucketAcl"), ("cors", "BucketCors"),
    ("lifecycle", "BucketLifecycleConfiguration"), ("tagging", "BucketTagging"),
    ("encryption", "BucketEncryption"), ("website", "BucketWebsite"), ("logging", "BucketLogging"),
    ("notification", "BucketNotificationConfiguration"), ("replication", "BucketReplication"),
    ("versioning", "BucketVersioning"), ("publicaccessblock", "PublicAccessBlock"),
    ("ownershipcontrols", "BucketOwnershipControls"), ("object-lock", "ObjectLockConfiguration"),
    ("accelerate", "BucketAccelerateConfiguration"), ("requestpayment", "BucketRequestPayment"),
    ("analytics", "BucketAnalyticsConfiguration"), ("metrics", "BucketMetricsConfiguration"),
    ("inventory", "BucketInventoryConfiguration"), ("intelligent-tiering", "BucketIntelligentTieringConfiguration"),
)
_NOT_DELETABLE = frozenset({"acl", "logging", "notification", "versioning", "object-lock", "accelerate",
                            "requestpayment"})

BUCKET_OPERATIONS: dict[str, tuple[tuple[str | None, str], ...]] = {
    "GET": (("list-type", "ListObjectsV2"), ("versions", "ListObjectVersions"),
            ("uploads", "ListMultipartUploads"), ("location", "GetBucketLocation"),
            ("policystatus", "GetBucketPolicyStatus"), ("session", "CreateSession"),
            *((sub, f"Get{name}") for sub, name in _BUCKET_CONFIG), (None, "ListObjects")),
    "PUT": (*((sub, f"Put{name}") for sub, name in _BUCKET_CONFIG), (None, "CreateBucket")),
    "DELETE": (*((sub, f"Delete{name}") for sub, name in _BUCKET_CONFIG if sub not in _NOT_DELETABLE),
               (None, "DeleteBucket")),
    "HEAD": ((None, "HeadBucket"),),
    "POST": (("delete", "DeleteObjects"), (None, "PostObject")),
}

SERVICE_OPERATIONS: dict[str, str] = {"GET": "ListBuckets"}


def operation(method: str, bucket: str | None, key: str | None, params: dict[str, str],
              copy_source: bool) -> str:
    """The S3 API operation of a request ("Unknown" when the combination names none)."""
    method = method.upper()
    if bucket is None:
        return SERVICE_OPERATIONS.get(method, "Unknown")
    table = OBJECT_OPERATIONS if key else BUCKET_OPERATIONS
    for subresource, name in table.get(method, ()):
        if subresource is None or subresource in params:
            if subresource == "list-type" and params.get("list-type") != "2":
                continue
            if copy_source and name == "PutObject":
                return "CopyObject"
            if copy_source and name == "UploadPart":
                return "UploadPartCopy"
            return name
    return "Unknown"


# --- XML bodies ---------------------------------------------------------------------------------

S3_XML_NAMESPACE = b"http://s3.amazonaws.com/doc/2006-03-01/"
_XML_ERROR_RE = re.compile(rb"^\s*(?:<\?xml[^>]{0,200}\?>\s*)?<Error(?:\s[^>]{0,200})?>")
_TAG_RES: dict[str, re.Pattern[bytes]] = {}
#: XML bytes searched for values.
MAX_XML_BYTES = 256 * 1024


def _tag_re(tag: str) -> re.Pattern[bytes]:
    pattern = _TAG_RES.get(tag)
    if pattern is None:
        pattern = re.compile(rb"<" + tag.encode() + rb">([^<]{0,1024})</" + tag.encode() + rb">")
        _TAG_RES[tag] = pattern
    return pattern


def xml_values(body: bytes, tag: str, limit: int) -> list[str]:
    """Text of the first `limit` `<tag>` elements (entities for &, <, >, ', \" decoded)."""
    found = []
    for match in _tag_re(tag).finditer(body, 0, MAX_XML_BYTES):
        found.append(_xml_text(match.group(1)))
        if len(found) >= limit:
            break
    return found


def xml_count(body: bytes, tag: str) -> int:
    return body.count(b"<" + tag.encode() + b">", 0, MAX_XML_BYTES)


def xml_error(body: bytes) -> tuple[str, str | None] | None:
    """`(Code, Message)` of an S3 `<Error>` document, or None."""
    if not _XML_ERROR_RE.match(body[:512]):
        return None
    codes = xml_values(body, "Code", 1)
    if not codes:
        return None
    messages = xml_values(body, "Message", 1)
    return codes[0][:MAX_TEXT], messages[0][:MAX_TEXT] if messages else None


def _xml_text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    if "&" in text:
        text = (text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"')
                .replace("&apos;", "'").replace("&amp;", "&"))
    return text
