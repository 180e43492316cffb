"""`inspector proxy --mode forward`: real clients (huggingface_hub, requests) through the real sidecar.

Loopback only: a Hugging Face-like HTTPS server and a second HTTPS server stand in for the hub and
an unlisted destination; the sidecar's allowlists name the hub's repositories `acme/*`. Checked:
an allowed model downloads byte for byte; a model whose pickle calls os.system never reaches the
client (the response is held until the scan decides, then replaced by the block response); a
repository and a host outside the allowlists are blocked (403 to the CONNECT, block response to
the request); every decision is in the EVE log with its `egress` object.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from inspector.live.certs import cert_pem, key_pem, make_ca, make_leaf

pytest.importorskip("huggingface_hub")
pytest.importorskip("mitmproxy")

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


GOOD = pickle.dumps({"weights": [0.25, 0.5, 0.75]}, protocol=4)
EVIL = pickle.dumps({"weights": [0.25], "hook": _Exploit()}, protocol=4)
#: Over the stream threshold (1 MiB): streamed, its first part held and scanned before anything goes on.
BIG_EVIL = pickle.dumps({"hook": _Exploit(), "weights": bytes(3 * 1024 * 1024)}, protocol=4)
FILES = {"/acme/good/resolve/main/model.pkl": GOOD, "/acme/evil/resolve/main/model.pkl": EVIL,
         "/other/model/resolve/main/model.pkl": GOOD, "/acme/big/resolve/main/model.pkl": BIG_EVIL}


class _Hub(BaseHTTPRequestHandler):
    def _answer(self, body_too: bool) -> None:
        body = FILES.get(self.path.split("?", 1)[0])
        if body is None:
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-repo-commit", COMMIT)
        self.send_header("etag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.end_headers()
        if body_too:
            self.wfile.write(body)

    def do_GET(self):
        self._answer(True)

    def do_HEAD(self):
        self._answer(False)

    def log_message(self, *args):
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _https_server(directory: Path, ca_cert, ca_key) -> ThreadingHTTPServer:
    leaf, leaf_key = make_leaf(ca_cert, ca_key, ["localhost", "127.0.0.1"], client=False)
    (directory / "leaf.pem").write_bytes(cert_pem(leaf) + cert_pem(ca_cert))
    (directory / "leaf-key.pem").write_bytes(key_pem(leaf_key))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "leaf.pem", directory / "leaf-key.pem")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def egress(tmp_path_factory):
    work = tmp_path_factory.mktemp("egress")
    ca_cert, ca_key = make_ca("egress test upstream CA")
    (work / "upstream-ca.pem").write_bytes(cert_pem(ca_cert))
    hub = _https_server(work, ca_cert, ca_key)
    other = _https_server(work, ca_cert, ca_key)
    hub_port, other_port = hub.server_address[1], other.server_address[1]
    (work / "site.yaml").write_text(f"egress:\n  registries: ['127.0.0.1:{hub_port}/acme/*']\n")
    port = _free_port()
    state = work / "state"
    eve = work / "eve.json"
    log = open(work / "sidecar.log", "wb")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "proxy", "--mode", "forward", "--listen", f"127.0.0.1:{port}",
         "--rules", str(ROOT / "signatures" / "egress"), "--config", str(work / "site.yaml"),
         "--upstream-ca", str(work / "upstream-ca.pem"), "--state-dir", str(state), "--eve", str(eve),
         "--metrics", "off"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 20
    while not (state / "mitmproxy-ca-cert.pem").exists() or not _listening(port):
        assert process.poll() is None, (work / "sidecar.log").read_text()
        assert time.monotonic() < deadline, "the sidecar did not start"
        time.sleep(0.1)
    yield {"work": work, "port": port, "ca": state / "mitmproxy-ca-cert.pem", "hub": hub_port, "other": other_port,
           "eve": eve}
    process.terminate()
    process.wait(timeout=15)
    log.close()
    hub.shutdown()
    other.shutdown()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _records(eve: Path, wanted: int, predicate) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        records = [json.loads(line) for line in eve.read_text().splitlines()] if eve.exists() else []
        found = [r for r in records if predicate(r)]
        if len(found) >= wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


HF_CLIENT = """
import json, sys
from huggingface_hub import hf_hub_download
out = {}
for repo in sys.argv[1:]:
    try:
        path = hf_hub_download(repo, "model.pkl", revision="main")
        out[repo] = open(path, "rb").read().hex()
    except Exception as exc:
        out[repo] = "error: " + type(exc).__name__
print(json.dumps(out))
"""


def _hf_download(egress, cache: Path, *repos: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in ("NO_PROXY", "HTTP_PROXY", "ALL_PROXY")}
    env.update(HF_ENDPOINT=f"https://127.0.0.1:{egress['hub']}", HTTPS_PROXY=f"http://127.0.0.1:{egress['port']}",
               SSL_CERT_FILE=str(egress["ca"]), HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_XET="1", HF_HUB_ETAG_TIMEOUT="10", HF_HUB_DOWNLOAD_TIMEOUT="10")
    result = subprocess.run([sys.executable, "-c", HF_CLIENT, *repos], env=env, capture_output=True, timeout=90,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_huggingface_hub_download_allowed_and_dangerous_pickle_blocked(egress, tmp_path):
    cache = tmp_path / "hf-cache"
    got = _hf_download(egress, cache, "acme/good", "acme/evil", "other/model")
    assert got["acme/good"] == GOOD.hex()
    assert got["acme/evil"].startswith("error: ")
    assert got["other/model"].startswith("error: ")
    # The dangerous pickle reached no file of the client's cache.
    cached = b"".join(p.read_bytes() for p in cache.rglob("*") if p.is_file())
    assert b"system" not in cached and EVIL not in cached
    alerts = _records(egress["eve"], 2, lambda r: r.get("event_type") == "alert")
    blocked = {(a["alert"]["signature_id"], a.get("modelhub", {}).get("repo"), a["alert"]["action"]) for a in alerts}
    assert (4800002, "acme/evil", "blocked") in blocked
    assert (4800001, "other/model", "blocked") in blocked
    downloads = _records(egress["eve"], 1, lambda r: r.get("event_type") == "modelhub"
                         and r["modelhub"].get("repo") == "acme/good" and r["http"]["http_method"] == "GET")
    assert downloads[0]["egress"] == {"host": "127.0.0.1", "port": egress["hub"], "phase": "request",
                                      "repo": "acme/good", "allowed": True, "matched": "registry",
                                      "entry": f"127.0.0.1:{egress['hub']}/acme/*"}
    assert downloads[0]["modelhub"]["model"]["format"] == "pickle"
    evil = _records(egress["eve"], 1, lambda r: r.get("event_type") == "modelhub"
                    and r["modelhub"].get("repo") == "acme/evil" and r["http"]["http_method"] == "GET")
    assert evil[0]["modelhub"]["model"]["pickle"]["dangerous"] == ["posix.system"]
    assert evil[0]["http"]["status"] == 200  # the record is the exchange inspected; the client got the block


def test_connect_to_a_host_outside_the_allowlists_is_refused(egress):
    proxies = {"https": f"http://127.0.0.1:{egress['port']}"}
    with pytest.raises(requests.exceptions.ProxyError, match="403"):
        requests.get(f"https://127.0.0.1:{egress['other']}/acme/good/resolve/main/model.pkl", proxies=proxies,
                     verify=str(egress["ca"]), timeout=10)
    connects = _records(egress["eve"], 1, lambda r: r.get("event_type") == "egress"
                        and r["egress"]["port"] == egress["other"])
    assert connects[0]["egress"] == {"host": "127.0.0.1", "port": egress["other"], "phase": "connect",
                                     "allowed": False}
    alerts = _records(egress["eve"], 1, lambda r: r.get("event_type") == "alert"
                      and r.get("egress", {}).get("port") == egress["other"])
    assert alerts[0]["alert"]["signature_id"] == 4800001 and alerts[0]["alert"]["action"] == "blocked"


def test_connect_to_the_registry_host_is_let_through(egress):
    proxies = {"https": f"http://127.0.0.1:{egress['port']}"}
    answer = requests.get(f"https://127.0.0.1:{egress['hub']}/acme/good/resolve/main/model.pkl", proxies=proxies,
                          verify=str(egress["ca"]), timeout=10)
    assert answer.status_code == 200 and answer.content == GOOD


def test_a_large_dangerous_model_is_stopped_before_its_first_byte_is_forwarded(egress):
    """3 MiB: the body streams; its first part is held, scanned, and the transfer aborted."""
    proxies = {"https": f"http://127.0.0.1:{egress['port']}"}
    received = b""
    url = f"https://127.0.0.1:{egress['hub']}/acme/big/resolve/main/model.pkl"
    with (pytest.raises(requests.exceptions.RequestException),
          requests.get(url, proxies=proxies, verify=str(egress["ca"]), timeout=10, stream=True) as answer):
        for chunk in answer.iter_content(65536):
            received += chunk
    assert received == b""
    alerts = _records(egress["eve"], 1, lambda r: r.get("event_type") == "alert"
                      and r.get("modelhub", {}).get("repo") == "acme/big")
    assert alerts[0]["alert"]["signature_id"] == 4800002 and alerts[0]["alert"]["action"] == "blocked"
