"""Shared helpers for the HTTP API layer tests (llm, feast, ray, torchserve, mlflow, ollama, jupyter).

* Exchanges built by hand for malformed variants no real client sends (:func:`exchange`), run
  through one layer the way inspector.apps runs it (:func:`run_layer`).
* The shipped captures under pcaps/clients/ through the whole offline pipeline (:func:`analyze`,
  :func:`layer_records`), optionally with temporary rules (:func:`ruleset`).
* The capture scripts re-run into a temporary folder (:func:`rerun_script`, skipped without root
  or tcpdump), and the field catalogue compared with what the layers produce (:func:`paths`).
* A Hypothesis strategy of arbitrary exchanges on a layer's paths (:func:`exchanges`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import strategies as st

from inspector import fields
from inspector.analyze import Analyzer
from inspector.apps import LayerContext
from inspector.engine import Engine
from inspector.http import HttpExchange, HttpMessage
from inspector.limits import DEFAULT_LIMITS
from inspector.protocols import grpc as grpc_layer
from inspector.protocols.http import http_object
from inspector.rules import load_rules

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "pcaps" / "clients"
PYTHON = sys.executable


# --- hand-built exchanges -------------------------------------------------------------------------


def message(kind: str, *, body: bytes | str = b"", headers: Iterable[tuple[str, str]] = (),
            content_type: str | None = None, truncated: bool = False, complete: bool = True,
            **head: Any) -> HttpMessage:
    data = body.encode() if isinstance(body, str) else body
    header_list = list(headers)
    if content_type is not None:
        header_list.append(("content-type", content_type))
    return HttpMessage(kind=kind, version=head.pop("version", "HTTP/1.1"), headers=header_list, body=data,
                       body_length=len(data) + (100 if truncated else 0), body_truncated=truncated,
                       complete=complete, **head)


def exchange(method: str, path: str, body: bytes | str | dict | list = b"", *,
             content_type: str | None = "application/json", status: int | None = 200,
             response_body: bytes | str | dict | list = b"", response_type: str | None = "application/json",
             headers: Iterable[tuple[str, str]] = (), authority: str = "127.0.0.1:8000",
             request_truncated: bool = False, request_complete: bool = True,
             response_truncated: bool = False) -> HttpExchange:
    """An HTTP/1.1 exchange; dict/list bodies are JSON-encoded."""
    if isinstance(body, dict | list):
        body = json.dumps(body)
    if isinstance(response_body, dict | list):
        response_body = json.dumps(response_body)
    request = message("request", method=method, path=path, authority=authority, body=body,
                      headers=[("host", authority), *headers], content_type=content_type if body else None,
                      truncated=request_truncated, complete=request_complete)
    response = None
    if status is not None:
        response = message("response", status=status, body=response_body,
                           content_type=response_type if response_body else None, truncated=response_truncated)
    return HttpExchange(request=request, response=response, stream_id=0)


def run_layer(module: ModuleType, ex: HttpExchange, *, dest_port: int = 8000,
              earlier: dict[str, Any] | None = None) -> tuple[dict[str, Any] | None, list[tuple[str, str]]]:
    """(the layer's object, [(event, message)] anomalies) for one exchange, as inspector.apps runs it.

    `earlier` adds objects that earlier layers put in the record (e.g. {"s3": {...}}).
    """
    record: dict[str, Any] = {"event_type": "http", "dest_port": dest_port, "http": http_object(ex),
                              **(earlier or {})}
    ctx = LayerContext(ex, record)
    grpc = grpc_layer.build(ctx)
    if grpc is not None:
        record["grpc"] = grpc
    ctx.layer = module.LAYER
    obj = module.build(ctx)
    return obj, [(event, text) for _, event, text in ctx.anomalies]


def grpc_exchange(path: str, payload: bytes, *, response_status: str = "0") -> HttpExchange:
    """A gRPC exchange whose request framer holds one message with `payload`."""
    request = message("request", version="HTTP/2", method="POST", path=path, authority="127.0.0.1:50051",
                      headers=[("te", "trailers")], content_type="application/grpc")
    response = message("response", version="HTTP/2", status=200, content_type="application/grpc")
    response.trailers = [("grpc-status", response_status)]
    framer = grpc_layer.GrpcFramer(DEFAULT_LIMITS)
    framer.feed(b"\x00" + len(payload).to_bytes(4, "big") + payload, 0.0)
    framer.end(0.0)
    ex = HttpExchange(request=request, response=response, stream_id=1)
    ex.observations[grpc_layer.OBSERVATION_REQUEST] = framer
    return ex


# --- captures ---------------------------------------------------------------------------------------


def analyze(path: Path, engine: Engine | None = None) -> tuple[Analyzer, list[dict]]:
    records: list[dict] = []
    analyzer = Analyzer(records.append, engine=engine)
    analyzer.analyze_file(path)
    return analyzer, records


def layer_records(path: Path, layer: str) -> list[dict]:
    """The transaction records of `path` that carry a `layer` object."""
    return [r for r in analyze(path)[1] if isinstance(r.get(layer), dict) and r["event_type"] != "alert"]


def anomalies(records: list[dict]) -> list[tuple[str, str]]:
    return [(r["anomaly"]["layer"], r["anomaly"]["event"]) for r in records if r["event_type"] == "anomaly"]


def ruleset(folder: Path, rules: dict[str, str]):
    for name, text in rules.items():
        (folder / name).write_text(text)
    return load_rules([folder])


def alerts(path: Path, rules) -> list[dict]:
    return [r for r in analyze(path, Engine(rules))[1] if r["event_type"] == "alert"]


def capture_problem() -> str | None:
    """Why the capture scripts cannot run here, or None."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "capturing on lo needs root"
    if shutil.which("tcpdump") is None:
        return "tcpdump is not installed"
    return None


def capture_gaps(path: Path) -> int:
    """TCP gaps in a capture: bytes the capture missed, as the reassembly saw them."""
    from inspector.analyze import Analyzer

    analyzer = Analyzer(lambda record: None)
    analyzer.analyze_file(path)
    return analyzer.stats.tcp.get("gaps", 0)


def rerun_script(script: str, out_dir: Path) -> None:
    """Run pcaps/clients/<script> into `out_dir` (skips the test when captures cannot run here).
    A loopback capture on a loaded machine can lose a packet: when a capture shows a TCP gap, the
    script runs again (three times at most)."""
    reason = capture_problem()
    if reason:
        pytest.skip(reason)
    for _ in range(3):
        done = subprocess.run([PYTHON, str(CLIENTS / script), "--out", str(out_dir)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        if not any(capture_gaps(path) for path in out_dir.glob("*.pcap")):
            return


# --- the field catalogue ----------------------------------------------------------------------------


def paths(obj: dict[str, Any], prefix: str) -> set[str]:
    """Dotted paths of every key of a layer object (nested objects expanded, lists of objects too)."""
    out = set()
    for key, value in obj.items():
        name = f"{prefix}.{key}"
        out.add(name)
        if isinstance(value, dict):
            out |= paths(value, name)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    out |= paths(item, name)
    return out


def declared(layer: str) -> dict[str, fields.FieldSpec]:
    return {name: spec for name, spec in fields.catalogue().items() if name.startswith(f"{layer}.")}


def check_catalogue(layer: str, objects: Iterable[dict[str, Any]], shared: tuple[str, ...] = ()) -> None:
    """Every produced key is declared with a matching type, and every declared field is produced
    (except below the `shared` prefixes: objects another module declares and tests, such as the
    model-file object of inspector.protocols.modelfile)."""
    specs = declared(layer)
    produced: set[str] = set()
    kinds = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "object": dict}
    for obj in objects:
        for name in paths(obj, layer):
            produced.add(name)
            spec = specs.get(name)
            assert spec is not None, f"{name} is produced but not declared"
            value: Any = obj
            for part in name.split(".")[1:]:
                value = value[part]
            if spec.is_list:
                item_type = kinds.get(spec.type[5:-1], object)
                assert isinstance(value, list) and all(isinstance(v, item_type) for v in value), (name, value)
            else:
                expected = kinds.get(spec.type, str)
                assert isinstance(value, expected), (name, value)
                if spec.type == "integer":
                    assert not isinstance(value, bool), name
    required = {name for name in specs if not name.startswith(shared)} if shared else set(specs)
    assert required <= produced, f"declared but never produced: {sorted(required - produced)}"
    assert all(spec.events == (layer,) and spec.description for spec in specs.values())


# --- Hypothesis -------------------------------------------------------------------------------------

_JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(_JSON_LEAVES, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=12), children, max_size=5), max_leaves=20)


def json_bodies(keys: list[str]) -> st.SearchStrategy[bytes]:
    """JSON objects using the layer's own keys (so the parsers go deep), mutated JSON, raw bytes."""
    objects = st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), JSON_VALUES, max_size=8)
    encoded = objects.map(lambda o: json.dumps(o).encode())
    return st.one_of(encoded, encoded.map(lambda b: b[: len(b) // 2]), st.binary(max_size=200),
                     JSON_VALUES.map(lambda v: json.dumps(v).encode()))


def stream_bodies(keys: list[str]) -> st.SearchStrategy[bytes]:
    """Event-stream and JSON-lines bodies made of the layer's JSON, and junk."""
    chunk = json_bodies(keys)
    sse = st.lists(chunk, max_size=5).map(lambda parts: b"".join(b"data: " + p + b"\n\n" for p in parts)
                                          + b"data: [DONE]\n\n")
    ndjson = st.lists(chunk, max_size=5).map(lambda parts: b"\n".join(parts))
    return st.one_of(sse, ndjson, st.binary(max_size=200))


def exchanges(paths_: list[str], keys: list[str]) -> st.SearchStrategy[HttpExchange]:
    """Arbitrary exchanges on the given paths (with junk appended sometimes) and bodies."""
    methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
    suffix = st.sampled_from(["", "/x", "?token=a&url=file:///x&pid=`id`&path=..%2f&name=a", "/%ff%2e%2e", "//"])
    path = st.tuples(st.sampled_from(paths_), suffix).map("".join) | st.text(max_size=30).map(lambda t: "/" + t)
    content_types = st.sampled_from([None, "application/json", "text/event-stream", "application/x-ndjson",
                                     "text/plain", "application/octet-stream"])

    @st.composite
    def build(draw: Callable) -> HttpExchange:
        ex = exchange(draw(methods), draw(path), draw(json_bodies(keys)), content_type=draw(content_types),
                      status=draw(st.sampled_from([None, 200, 201, 400, 404, 500])),
                      response_body=draw(json_bodies(keys) | stream_bodies(keys)),
                      response_type=draw(content_types), request_truncated=draw(st.booleans()),
                      response_truncated=draw(st.booleans()),
                      headers=draw(st.lists(st.sampled_from([("user-agent", "ollama/0.1.33"),
                                                             ("upgrade", "websocket"),
                                                             ("authorization", "token x"),
                                                             ("cookie", "username-a=b")]), max_size=2)))
        return ex

    return build()


def grpc_exchanges(paths_: list[str]) -> st.SearchStrategy[HttpExchange]:
    """gRPC exchanges on the given :paths with arbitrary (often malformed) protobuf payloads."""
    payload = st.binary(max_size=120) | st.lists(st.tuples(st.integers(1, 12), st.binary(max_size=30)),
                                                 max_size=6).map(_fake_message)
    return st.builds(grpc_exchange, st.sampled_from(paths_), payload)


def _fake_message(fields_: list[tuple[int, bytes]]) -> bytes:
    from inspector.protocols.protobuf import encode_message
    return encode_message([(number, value) for number, value in fields_])
