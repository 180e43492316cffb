"""Fixtures of the anomaly rules (signatures/anomaly/): each learns a baseline, then tests against it.

Every fixture here has a `baseline` builder: normal traffic (two application clients calling two
Triton models over REST at a steady pace for five minutes) from which `write_fixture` learns
`baseline.json` (inspector.anomaly) and writes it beside both captures; the fixture's test.yaml
names it (`baseline: baseline.json`), so the captures are analyzed against that baseline.
"""

from __future__ import annotations

import random

from inspector.lab.craft import Capture
from inspector.lab.rulecaps.fixture import SERVER_IP, Fixture
from inspector.lab.traffic_http import HttpSession
from inspector.lab.traffic_ray import job_submitted, submit_job
from inspector.lab.traffic_tls import CURL_OPENSSL, GRPC_CORE, tls_connection
from inspector.lab.traffic_triton import Tensor, rest_error, rest_infer, rest_infer_response

APP1, APP2 = "10.10.1.20", "10.10.1.21"
STRANGER = "10.10.9.9"
START = 1_767_225_600.0
#: The test captures start after the training traffic (the baseline does not count the gap).
TEST_START = START + 600.0
OUT = [Tensor(name="OUTPUT0", shape=(1, 2))]


def _call(session: HttpSession, model: str, shape: tuple[int, ...]) -> None:
    session.exchange(rest_infer(model, [Tensor(name="INPUT0", shape=shape)]), rest_infer_response(model, OUT))


def normal_traffic(cap: Capture, rng: random.Random) -> None:
    """Two clients, each calling `resnet` and `bert` alternately every 2 s for 300 s (shape [1,4])."""
    for offset, client in ((0.0, APP1), (1.0, APP2)):
        session = HttpSession(cap, rng, client, SERVER_IP, 8000, start=START + offset)
        for n in range(150):
            _call(session, "resnet" if n % 2 else "bert", (1, 4))
            session.wait(2.0)
        session.close()


def _paced(cap: Capture, rng: random.Random, client: str, calls: int, gap: float, shape: tuple[int, ...] = (1, 4),
           model: str = "resnet") -> None:
    session = HttpSession(cap, rng, client, SERVER_IP, 8000, start=TEST_START)
    for _ in range(calls):
        _call(session, model, shape)
        session.wait(gap)
    session.close()


def _rate(attack: bool):
    def build(cap: Capture, rng: random.Random) -> None:
        # Normal: one call to resnet every 4 s per client (2.5 per 10 s). Spike: 100 in 10 s.
        # Near miss: twice the usual pace (one a second) for a minute.
        _paced(cap, rng, APP1, 100 if attack else 60, 0.1 if attack else 1.0)

    return build


def _size(attack: bool):
    def build(cap: Capture, rng: random.Random) -> None:
        # A batch of 2048 rows (the shape pattern [*,4] is known, the body is 1000x the usual);
        # the near miss a batch of 2 (twice the usual bytes).
        _paced(cap, rng, APP1, 1, 1.0, (2048 if attack else 2, 4))

    return build


def _shape(attack: bool):
    def build(cap: Capture, rng: random.Random) -> None:
        # A new inner dimension ([1,8]); the near miss changes only the batch dimension ([3,4]).
        _paced(cap, rng, APP1, 1, 1.0, (1, 8) if attack else (3, 4))

    return build


def _client(attack: bool):
    def build(cap: Capture, rng: random.Random) -> None:
        _paced(cap, rng, STRANGER if attack else APP2, 2, 1.0)

    return build


def _enumeration(attack: bool):
    def build(cap: Capture, rng: random.Random) -> None:
        # A known client asks for 5 models the server never served (404s) within 10 s; the near
        # miss asks for 2 (a typo and a new deployment).
        session = HttpSession(cap, rng, APP1, SERVER_IP, 8000, start=TEST_START)
        names = ["llama", "gpt-j", "whisper", "sdxl", "yolo"] if attack else ["resnt", "resnet-v2"]
        for name in names:
            session.exchange(rest_infer(name, [Tensor(name="INPUT0", shape=(1, 4))]),
                             rest_error(f"Request for unknown model: '{name}' is not found", 404))
            session.wait(2.0)
        session.close()

    return build


def _protocol(attack: bool):
    def build(cap: Capture, rng: random.Random) -> None:
        # From the application zone to the model server, where the baseline only ever saw Triton:
        # a Ray job submission (the Ray dashboard's job API on the same host); the near miss is
        # Triton again, for a model never called before (new to the baseline, not a new protocol).
        session = HttpSession(cap, rng, APP1, SERVER_IP, 8265 if attack else 8000, start=TEST_START)
        if attack:
            session.exchange(submit_job("python -c 'import os; os.system(\"id\")'",
                                        host=f"{SERVER_IP}:8265"), job_submitted())
        else:
            _call(session, "yolo", (1, 4))
        session.close()

    return build


def tls_traffic(cap: Capture, rng: random.Random) -> None:
    """Two clients, each opening a gRPC-over-TLS connection (gRPC C-core's ClientHello) to the
    model server every 12 s for 300 s."""
    for offset, client in ((0.0, APP1), (6.0, APP2)):
        for n in range(25):
            tls_connection(cap, rng, client, SERVER_IP, 8001, START + offset + 12.0 * n, GRPC_CORE, "triton.ml.svc")


def _fingerprint(attack: bool):
    def build(cap: Capture, rng: random.Random) -> None:
        # A known client with another TLS stack (curl on OpenSSL: a new JA4); the near miss is the
        # usual stack to another host name (SNI), which JA4 does not fingerprint.
        if attack:
            tls_connection(cap, rng, APP1, SERVER_IP, 8001, TEST_START, CURL_OPENSSL, "triton.ml.svc")
        else:
            tls_connection(cap, rng, APP2, SERVER_IP, 8001, TEST_START, GRPC_CORE, "triton-canary.ml.svc")

    return build


#: Zones for the new_protocol fixture: the two application clients and the model server.
ZONE_POLICY = f"""# Segmentation policy of the anomaly_new_protocol fixture (inspector/lab/rulecaps/anomaly.py).
name: anomaly-fixture
default: deny
unknown_zone: outside
zones:
  - name: apps
    plane: data
    cidrs: [10.10.1.0/24]
  - name: serving
    plane: data
    cidrs: [{SERVER_IP}/32]
rules:
  - name: apps-call-models
    from: apps
    to: serving
    protocols: [triton, ray]
"""

NOTES = ("The baseline (`baseline.json`, learned by inspector.anomaly from a capture the fixture module "
         "builds and does not keep: two clients calling `resnet` and `bert` over Triton REST every 2 s "
         "for 5 minutes, shape [1,4]) is written beside each capture and named in test.yaml. ")

FIXTURES: dict[str, Fixture] = {
    "anomaly_rate_spike": Fixture(
        sid=4700001, positive=_rate(True), negative=_rate(False), baseline=normal_traffic,
        parsed=("triton", 100, 60), positive_count=8,
        notes=NOTES + "Positive: a known client sends 100 inferences in 10 s (usually 2.5); negative: one a "
              "second for a minute (twice its usual pace). The rule asks for a robust z-score of 8: the "
              "spike reaches it for the client, for all clients of the model and for the server."),
    "anomaly_payload_size": Fixture(
        sid=4700002, positive=_size(True), negative=_size(False), baseline=normal_traffic,
        parsed=("triton", 1, 1),
        notes=NOTES + "Positive: a known client sends a batch of 2048 rows (the body 1000x its usual size, the "
              "shape pattern unchanged); negative: a batch of 2."),
    "anomaly_new_shape": Fixture(
        sid=4700003, positive=_shape(True), negative=_shape(False), baseline=normal_traffic,
        parsed=("triton", 1, 1),
        notes=NOTES + "Positive: input shape [1,8] where the model always had [*,4]; negative: [3,4] (only the "
              "batch dimension differs)."),
    "anomaly_new_client": Fixture(
        sid=4700004, positive=_client(True), negative=_client(False), baseline=normal_traffic,
        parsed=("triton", 2, 2),
        notes=NOTES + "Positive: a client address the server never saw; negative: the second known client."),
    "anomaly_new_protocol": Fixture(
        sid=4700006, positive=_protocol(True), negative=_protocol(False), baseline=normal_traffic,
        policy=ZONE_POLICY, parsed=("triton", 0, 1),
        notes=NOTES + "Learned and analyzed with a segmentation policy (`policy.yaml`: zones apps and "
              "serving, which the policy lets speak Triton and Ray). Positive: the first client submits a "
              "Ray job to the model server, where apps -> serving only ever carried Triton; negative: a "
              "Triton call for a model never called before (a new endpoint, not a new protocol)."),
    "anomaly_new_fingerprint": Fixture(
        sid=4700007, positive=_fingerprint(True), negative=_fingerprint(False), baseline=tls_traffic,
        parsed=("tls", 1, 1),
        notes="The baseline (`baseline.json`, learned by inspector.anomaly from a capture the fixture module "
              "builds and does not keep: two clients opening a gRPC-over-TLS connection to the model server "
              "every 12 s for 5 minutes, gRPC C-core's ClientHello, inspector/lab/traffic_tls.py) is written "
              "beside each capture and named in test.yaml. Positive: a known client connects with curl's "
              "OpenSSL ClientHello (a JA4 the server never saw); negative: the usual stack to another host "
              "name."),
    "anomaly_endpoint_enumeration": Fixture(
        sid=4700005, positive=_enumeration(True), negative=_enumeration(False), baseline=normal_traffic,
        parsed=("triton", 5, 2),
        notes=NOTES + "Positive: a known client asks for 5 models the server never served, within 10 s (404s); "
              "negative: 2 such models (the rule counts 3 new endpoints per client per minute)."),
}
