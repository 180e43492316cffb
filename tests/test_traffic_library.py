"""The lab's traffic library (inspector/lab/traffic_*.py): its bytes are what the real libraries make.

The rule fixtures exercise every builder through the offline pipeline; these tests check the
bytes against the libraries themselves: SigV4 signatures recomputed by botocore from the wire
request, Triton messages parsed back by tritonclient's protobuf classes, pickles disassembled
by pickletools (never loaded), zips read by zipfile, TLS ClientHellos answered by OpenSSL.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickletools
import zipfile

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from tritonclient.grpc import service_pb2 as pb

from inspector.lab import traffic_models, traffic_s3, traffic_triton
from inspector.lab.traffic_triton import Tensor


def split_request(wire: bytes) -> tuple[str, str, dict[str, str], bytes]:
    head, _, body = wire.partition(b"\r\n\r\n")
    request_line, *lines = head.decode().split("\r\n")
    method, target, version = request_line.split(" ")
    assert version == "HTTP/1.1"
    headers = dict(line.split(": ", 1) for line in lines)
    return method, target, headers, body


def test_s3_request_carries_a_signature_botocore_recomputes_from_the_wire():
    identity = traffic_s3.S3Identity(access_key="AKIALABTEST000000001")
    body = traffic_models.safetensors_bytes()
    wire = traffic_s3.s3_request("PUT", "ml-models-prod", "fraud/v1/model.safetensors", body=body, identity=identity)
    method, target, headers, sent = split_request(wire)
    assert (method, target, sent) == ("PUT", "/fraud/v1/model.safetensors", body)
    assert headers["Host"] == "ml-models-prod.s3.us-east-1.amazonaws.com"
    assert headers["Content-Length"] == str(len(body))
    assert headers["X-Amz-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert headers["X-Amz-Date"] == "20260101T000000Z"
    assert headers["Authorization"].startswith(
        "AWS4-HMAC-SHA256 Credential=AKIALABTEST000000001/20260101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=")
    again = AWSRequest(method=method, url=f"http://{headers['Host']}{target}", data=sent,
                       headers={"X-Amz-Content-SHA256": headers["X-Amz-Content-SHA256"]})
    with traffic_s3._fixed_clock():
        botocore.auth.S3SigV4Auth(Credentials(identity.access_key, identity.secret_key), "s3",
                                  "us-east-1").add_auth(again)
    assert again.headers["Authorization"] == headers["Authorization"]


def test_anonymous_and_path_style_s3_requests():
    wire = traffic_s3.s3_request("GET", "public-demo", "a b/model.pkl", identity=None, style="path")
    method, target, headers, body = split_request(wire)
    assert (method, target, body) == ("GET", "/public-demo/a%20b/model.pkl", b"")
    assert headers["Host"] == "s3.us-east-1.amazonaws.com"
    assert not any(name.lower().startswith(("authorization", "x-amz-")) for name in headers)


def test_triton_grpc_messages_parse_back_with_tritonclient():
    call = traffic_triton.grpc_infer("resnet", [Tensor(name="x", shape=(65536, 65536), sent_elements=4),
                                                Tensor(name="y", shape=(1, 4), shm=("r0", (1 << 64) - 32, 16))])
    request = pb.ModelInferRequest.FromString(call.requests[0])
    assert request.model_name == "resnet"
    assert [list(i.shape) for i in request.inputs] == [[65536, 65536], [1, 4]]
    assert [len(c) for c in request.raw_input_contents] == [16]
    assert request.inputs[1].parameters["shared_memory_offset"].int64_param == -32
    assert request.inputs[1].parameters["shared_memory_region"].string_param == "r0"
    load_call = traffic_triton.grpc_model_load("m", config={"backend": "python"}, files={"1/model.py": b"print(1)"})
    load = pb.RepositoryModelLoadRequest.FromString(load_call.requests[0])
    assert load.parameters["file:1/model.py"].bytes_param == b"print(1)"
    assert json.loads(load.parameters["config"].string_param) == {"backend": "python"}
    settings = pb.LogSettingsRequest.FromString(
        traffic_triton.grpc_log_settings({"log_file": "/root/.bashrc", "log_info": True, "log_verbose_level": 2})
        .requests[0]).settings
    assert (settings["log_file"].string_param, settings["log_info"].bool_param,
            settings["log_verbose_level"].uint32_param) == ("/root/.bashrc", True, 2)


def test_triton_rest_bodies():
    _, target, _, body = split_request(traffic_triton.rest_model_load(
        "custom", config={"backend": "python"}, files={"1/model.py": b"import os\n"}))
    assert target == "/v2/repository/models/custom/load"
    parameters = json.loads(body)["parameters"]
    assert parameters == {"config": '{"backend": "python"}', "file:1/model.py": "aW1wb3J0IG9zCg=="}
    _, _, _, body = split_request(traffic_triton.rest_infer("m", [Tensor(name="x", shape=(1, 2), datatype="INT32"),
                                                                  Tensor(name="s", shape=(1, 2), shm=("r", 16, 8))]))
    assert json.loads(body)["inputs"] == [
        {"name": "x", "shape": [1, 2], "datatype": "INT32", "data": [1, 1]},
        {"name": "s", "shape": [1, 2], "datatype": "FP32",
         "parameters": {"shared_memory_region": "r", "shared_memory_offset": 16, "shared_memory_byte_size": 8}}]


def _globals(data: bytes) -> list[str]:
    """module.name of every GLOBAL / STACK_GLOBAL, by disassembly (the pickle is never loaded)."""
    found, strings = [], []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif opcode.name == "GLOBAL":
            found.append(arg.replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL":
            found.append(".".join(strings[-2:]))
    return found


def test_pickles_are_made_by_pickle_and_only_disassembled():
    assert _globals(traffic_models.malicious_pickle("id")) in (["posix.system"], ["os.system"], ["nt.system"])
    assert _globals(traffic_models.benign_pickle()) == ["collections.OrderedDict"]


def test_torch_zip_is_deterministic_and_a_real_zip():
    first = traffic_models.torch_zip(traffic_models.benign_pickle())
    assert first == traffic_models.torch_zip(traffic_models.benign_pickle())
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        assert archive.namelist() == ["archive/data.pkl", "archive/data/0", "archive/version"]
        assert archive.read("archive/data.pkl") == traffic_models.benign_pickle()
        assert {info.date_time for info in archive.infolist()} == {traffic_models.ZIP_TIME}


def test_tls_client_hellos_are_answered_by_openssl(tmp_path):
    """Each TLS stack's ClientHello, fed to a real TLS server (Python's ssl, OpenSSL), gets a
    ServerHello back: a well-formed hello OpenSSL can negotiate with (TLS 1.3 for both stacks)."""
    import random
    import ssl

    from inspector.lab.traffic_tls import CURL_OPENSSL, GRPC_CORE
    from inspector.live.certs import cert_pem, key_pem, make_ca, make_leaf
    from inspector.live.proxy import write_private
    from inspector.protocols.tls import parse_server_hello

    ca, ca_key = make_ca("lab CA")
    leaf, leaf_key = make_leaf(ca, ca_key, ["triton.ml.svc"], client=False)
    (tmp_path / "cert.pem").write_bytes(cert_pem(leaf))
    write_private(tmp_path / "key.pem", key_pem(leaf_key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    context.set_alpn_protocols(["h2", "http/1.1"])
    for stack in (GRPC_CORE, CURL_OPENSSL):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        server = context.wrap_bio(incoming, outgoing, server_side=True)
        incoming.write(stack.client_hello("triton.ml.svc", random.Random(stack.name)))
        with pytest.raises(ssl.SSLWantReadError):  # waits for the client's Finished: the hello was taken
            server.do_handshake()
        answer = outgoing.read()
        assert answer[0] == 22 and answer[5] == 2, stack.name  # a handshake record holding a ServerHello
        length = int.from_bytes(answer[6:9], "big")
        hello = parse_server_hello(answer[9:9 + length])
        assert hello.version == 0x0304, stack.name  # OpenSSL chose TLS 1.3 from supported_versions
        assert hello.cipher_suite in stack.ciphers, stack.name
        assert server.selected_alpn_protocol() == "h2", stack.name
