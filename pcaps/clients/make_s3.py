"""Capture S3 traffic on loopback: boto3 (and urllib) against moto's S3 server.

Writes `s3.pcap` next to this script (or into `--out DIR`). moto's `ThreadedMotoServer` listens
on 127.0.0.1 (a free port); tcpdump captures that port on `lo` while these run, in this order:

path style, endpoint http://127.0.0.1:PORT, long-term key AKIAIOSFODNN7EXAMPLE, region us-east-1:
  1 CreateBucket models
  2-8 PutObject: benign/model.pkl (pickle of plain data), evil/payload.pkl (a pickle whose
      __reduce__ names os.system: built with pickle.dumps, never loaded), torch/model.pt (a
      torch-style zip: archive/data.pkl, archive/data/0, archive/version), weights/model.safetensors
      (built by hand), llm/model.gguf (GGUF v3 header and metadata), arrays/embeddings.npy
      (numpy.save), chunked/evil.pt (a torch-style zip with the os.system pickle as data.pkl, sent
      aws-chunked with a CRC32 trailer: boto3 only does that over https, so a before-call hook
      moves the checksum to the trailer as it would over TLS)
  9-12 multipart big/model.bin (a torch-style zip of 80 KiB): Create, UploadPart 1 and 2, Complete
  13-14 GetObject evil/payload.pkl and benign/model.pkl
  15-16 GetObject big/model.bin with Range bytes=0-4095 and bytes=40960-45055
  17 HeadObject torch/model.pt
  18 ListObjectsV2 models
  19 GetObject missing/model.pt (NoSuchKey)
  20 DeleteObject arrays/embeddings.npy
  21 presigned (SigV4 query) GET of weights/model.safetensors, fetched with urllib
  22 presigned (SigV2 query) GET of llm/model.gguf, fetched with urllib
virtual-hosted, endpoint http://s3.us-east-1.amazonaws.com:PORT, temporary key ASIA... + session token:
  23 PutObject vhost/model.onnx (an ONNX ModelProto built with inspector's protobuf encoder)
  24 GetObject vhost/model.onnx
  25 DeleteObjects [vhost/model.onnx]
  26 ListBuckets
anonymous (no signature), urllib, virtual-hosted on the AWS name:
  27 GET evil/payload.pkl (private: AccessDenied)
  28 PutObjectAcl benign/model.pkl public-read (the path-style client again)
  29 GET benign/model.pkl

The AWS host names resolve to 127.0.0.1 only inside this process: `socket.getaddrinfo` is wrapped
to map `*.amazonaws.com` to 127.0.0.1 and to refuse any answer that is not loopback, so nothing
leaves the machine. moto does not check signatures. Needs root (tcpdump on lo).
Usage: `python pcaps/clients/make_s3.py [--out DIR]`.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import os
import pickle
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("S3_UPLOAD_PART_MIN_SIZE", "8192")  # small parts: moto reads it at import

import boto3
import numpy
from botocore.config import Config
from moto.server import ThreadedMotoServer

from inspector.protocols.protobuf import encode_field, encode_message

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
BUCKET = "models"
LONG_TERM_KEY = "AKIAIOSFODNN7EXAMPLE"
TEMPORARY_KEY = "ASIAY34FZKBOKMUTVV7A"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # must never appear in the EVE output
SESSION_TOKEN = "FwoGZXIvYXdzEJr//////////wEaDEXAMPLETOKENVALUE"  # must never appear either
REGION = "us-east-1"
AWS_ENDPOINT_HOST = f"s3.{REGION}.amazonaws.com"
PART_SIZE = 48 * 1024


# --- payloads -------------------------------------------------------------------------------------


class ShellOnLoad:
    """Pickles as a call to os.system: the classic malicious model. Only ever pickled here."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, ("echo owned",))


def benign_pickle() -> bytes:
    return pickle.dumps({"weights": [0.5, -1.25, 3.0], "bias": 0.1, "labels": ["cat", "dog"]}, protocol=4)


def malicious_pickle() -> bytes:
    return pickle.dumps(ShellOnLoad(), protocol=2)


def torch_data_pickle() -> bytes:
    """A data.pkl shaped like torch.save's: an OrderedDict whose tensor is rebuilt by torch._utils."""
    return (b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x06\x00\x00\x00weightq\x02"
            b"ctorch._utils\n_rebuild_tensor_v2\nq\x03(X\x01\x00\x00\x000q\x04K\x00K\x02\x85q\x05"
            b"K\x01\x85q\x06\x89tq\x07Rq\x08s.")


def torch_zip(data_pkl: bytes, storage: bytes = b"\x00" * 8) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/data/0", storage)
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


def big_torch_zip() -> bytes:
    """80 KiB: uploaded in two parts, read back with Range requests."""
    storage = bytes(range(256)) * 320
    return torch_zip(torch_data_pickle(), storage)


def safetensors_bytes() -> bytes:
    header = {
        "__metadata__": {"format": "pt"},
        "embed.weight": {"dtype": "F16", "shape": [4, 2], "data_offsets": [0, 16]},
        "head.bias": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]},
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to 8 bytes with spaces
    return struct.pack("<Q", len(text)) + text + bytes(range(24))


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def gguf_bytes() -> bytes:
    pairs = [
        ("general.architecture", "llama"),
        ("general.name", "tiny-llama"),
        ("tokenizer.chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}"),
    ]
    body = b"".join(_gguf_string(k) + struct.pack("<I", 8) + _gguf_string(v) for k, v in pairs)
    body += _gguf_string("llama.context_length") + struct.pack("<II", 4, 2048)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs) + 1) + body


def npy_bytes() -> bytes:
    buffer = io.BytesIO()
    numpy.save(buffer, numpy.arange(12, dtype="<f4").reshape(3, 4))
    return buffer.getvalue()


def onnx_bytes() -> bytes:
    """ModelProto{ir_version 9, producer "pytorch" 2.3.0, graph{node Relu, name}, opset_import{17}}."""
    node = encode_message([(1, "x"), (2, "y"), (4, "Relu")])
    graph = encode_field(1, node) + encode_field(2, "main_graph")
    opset = encode_message([(2, 17)])
    return (encode_field(1, 9) + encode_field(2, "pytorch") + encode_field(3, "2.3.0")
            + encode_field(7, graph) + encode_field(8, opset))


PUTS = [
    ("benign/model.pkl", benign_pickle),
    ("evil/payload.pkl", malicious_pickle),
    ("torch/model.pt", lambda: torch_zip(torch_data_pickle())),
    ("weights/model.safetensors", safetensors_bytes),
    ("llm/model.gguf", gguf_bytes),
    ("arrays/embeddings.npy", npy_bytes),
]
CHUNKED_KEY = "chunked/evil.pt"
BIG_KEY = "big/model.bin"
ONNX_KEY = "vhost/model.onnx"


# --- capture ------------------------------------------------------------------------------------


class CaptureUnavailable(RuntimeError):
    """tcpdump is missing or cannot capture on lo here."""


def capture_problem() -> str | None:
    """Why a loopback capture cannot run here, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "capturing on lo needs root"
    if shutil.which("tcpdump") is None:
        return "tcpdump is not installed"
    return None


@contextmanager
def tcpdump(path: Path, port: int, *, timeout: float = 15.0) -> Iterator[None]:
    """Capture `tcp port <port>` on lo into `path` for the duration of the block.

    tcpdump drops what it has not written yet when it gets SIGINT; on a busy machine that can be
    most of a burst. So the block's end waits until the file has stopped growing for a second.
    """
    proc = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-U", "-s", "0", "-B", "8192", "-w", str(path),
                             f"tcp port {port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    seen = b""
    while b"listening on" not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            proc.wait()
            raise CaptureUnavailable(f"tcpdump did not start: {seen.decode(errors='replace').strip()[:300]}")
        if select.select([proc.stderr], [], [], left)[0]:
            seen += proc.stderr.read1(4096)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        size, still_since = -1, time.monotonic()
        while time.monotonic() - still_since < 1.0 and time.monotonic() < deadline + 60:
            time.sleep(0.2)
            current = path.stat().st_size if path.exists() else 0
            if current != size:
                size, still_since = current, time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


# --- loopback only ----------------------------------------------------------------------------


def _loopback_resolver(real: Any) -> Any:
    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, bytes):
            host = host.decode()
        if isinstance(host, str) and host.endswith(".amazonaws.com"):
            host = HOST
        answers = real(host, port, *args, **kwargs)
        for answer in answers:
            if not ipaddress.ip_address(answer[4][0]).is_loopback:
                raise OSError(f"refusing non-loopback address {answer[4][0]} for {host}")
        return answers

    return getaddrinfo


def _force_trailer_checksum(context: dict[str, Any], **_: Any) -> None:
    """Send the checksum as an aws-chunked trailer, as boto3 does over https."""
    algorithm = context.get("checksum", {}).get("request_algorithm")
    if isinstance(algorithm, dict):
        algorithm["in"] = "trailer"


def _client(endpoint: str, style: str, key: str, token: str | None = None, signature: str = "s3v4") -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=key, aws_secret_access_key=SECRET,
        aws_session_token=token,
        config=Config(s3={"addressing_style": style}, signature_version=signature,
                      retries={"max_attempts": 1, "mode": "standard"}))


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


def run_clients(port: int) -> None:
    endpoint = f"http://{HOST}:{port}"
    s3 = _client(endpoint, "path", LONG_TERM_KEY)
    s3.create_bucket(Bucket=BUCKET)
    for key, make in PUTS:
        s3.put_object(Bucket=BUCKET, Key=key, Body=make())
    chunked = _client(endpoint, "path", LONG_TERM_KEY)
    chunked.meta.events.register("before-call.s3.PutObject", _force_trailer_checksum)
    chunked.put_object(Bucket=BUCKET, Key=CHUNKED_KEY, Body=torch_zip(malicious_pickle()))

    big = big_torch_zip()
    upload = s3.create_multipart_upload(Bucket=BUCKET, Key=BIG_KEY)
    parts = []
    for number, start in enumerate(range(0, len(big), PART_SIZE), 1):
        answer = s3.upload_part(Bucket=BUCKET, Key=BIG_KEY, UploadId=upload["UploadId"], PartNumber=number,
                                Body=big[start:start + PART_SIZE])
        parts.append({"ETag": answer["ETag"], "PartNumber": number})
    s3.complete_multipart_upload(Bucket=BUCKET, Key=BIG_KEY, UploadId=upload["UploadId"],
                                 MultipartUpload={"Parts": parts})

    s3.get_object(Bucket=BUCKET, Key="evil/payload.pkl")["Body"].read()
    s3.get_object(Bucket=BUCKET, Key="benign/model.pkl")["Body"].read()
    s3.get_object(Bucket=BUCKET, Key=BIG_KEY, Range="bytes=0-4095")["Body"].read()
    s3.get_object(Bucket=BUCKET, Key=BIG_KEY, Range="bytes=40960-45055")["Body"].read()
    s3.head_object(Bucket=BUCKET, Key="torch/model.pt")
    s3.list_objects_v2(Bucket=BUCKET)
    try:
        s3.get_object(Bucket=BUCKET, Key="missing/model.pt")
    except s3.exceptions.NoSuchKey:
        pass
    s3.delete_object(Bucket=BUCKET, Key="arrays/embeddings.npy")
    _fetch(s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "weights/model.safetensors"},
                                     ExpiresIn=900))
    v2 = _client(endpoint, "path", LONG_TERM_KEY, signature="s3")
    _fetch(v2.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "llm/model.gguf"},
                                     ExpiresIn=900))

    aws_endpoint = f"http://{AWS_ENDPOINT_HOST}:{port}"
    vhost = _client(aws_endpoint, "virtual", TEMPORARY_KEY, token=SESSION_TOKEN)
    vhost.put_object(Bucket=BUCKET, Key=ONNX_KEY, Body=onnx_bytes())
    vhost.get_object(Bucket=BUCKET, Key=ONNX_KEY)["Body"].read()
    vhost.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": ONNX_KEY}]})
    vhost.list_buckets()

    anonymous = f"http://{BUCKET}.{AWS_ENDPOINT_HOST}:{port}"
    try:
        _fetch(f"{anonymous}/evil/payload.pkl")
    except urllib.error.HTTPError as denied:
        denied.read()
    s3.put_object_acl(Bucket=BUCKET, Key="benign/model.pkl", ACL="public-read")
    _fetch(f"{anonymous}/benign/model.pkl")


def make(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "s3.pcap"
    real = socket.getaddrinfo
    socket.getaddrinfo = _loopback_resolver(real)
    server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
    server.start()
    try:
        _, port = server.get_host_and_port()
        with tcpdump(path, port):
            run_clients(port)
    finally:
        server.stop()
        socket.getaddrinfo = real
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory for the pcap (default: beside this script)")
    path = make(parser.parse_args().out)
    print(f"{path} {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
