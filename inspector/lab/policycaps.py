"""Fixtures of the segmentation rule (signatures/policy/), made by code like inspector.lab.rulecaps.

`tests/signatures/policy_flow_not_allowed/` gets a `positive/` and a `negative/` folder, each
with `input.pcap`, the `policy.yaml` the run loads and a suricata-verify style `test.yaml`:

* positive: a PyTorch TCPStore rendezvous from an inference host to the training job's store
  (inference -> training is not allowed), beside the same rendezvous from a training worker;
* negative: both rendezvous from training workers (training -> training tcpstore is allowed).

The TCPStore bytes are the new-numbering wire format (VALIDATE, ADD, SET, GET), encoded by
inspector.lab.tcpstorecaps.StoreWire, carried in crafted TCP conversations.

    python -m inspector.lab.policycaps tests/signatures
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from inspector.lab.craft import CLIENT, SERVER, Capture, TcpConversation
from inspector.lab.tcpstorecaps import NEW, StoreWire

EPOCH = 1_767_225_600.0
STEM = "policy_flow_not_allowed"
SID = 4600001
RULE_PATH = "signatures/policy/policy_flow_not_allowed.yml"
STORE = "10.10.0.2"  # the training job's TCPStore (rank 0)
TRAINING_WORKER = "10.10.0.3"
TRAINING_WORKER_2 = "10.10.0.4"
INFERENCE_HOST = "10.20.0.7"
#: TCPStore records one rendezvous session makes (VALIDATE, ADD, SET, GET).
RECORDS_PER_SESSION = 4

POLICY = """\
# Segmentation policy of the policy_flow_not_allowed fixtures; made by inspector.lab.policycaps
name: fixture-cluster
default: deny
zones:
  - name: training
    plane: data
    cidrs: [10.10.0.0/16]
  - name: inference
    plane: data
    cidrs: [10.20.0.0/16]
rules:
  - name: training-rendezvous
    from: training
    to: training
    protocols: [tcpstore, nccl]
  - name: inference-serving
    from: [inference, outside]
    to: inference
    protocols: [triton, grpc, http]
"""


def _rendezvous(cap: Capture, rng: random.Random, client: str, start: float) -> None:
    """A torchrun-style store session: VALIDATE, ADD init/, SET and GET of a rank key."""
    conv = TcpConversation(cap, (client, rng.randrange(40000, 60000)), (STORE, 29500), start, rng).handshake()
    s = StoreWire
    for query, reply in ((s.validate(), b""),
                         (s.code(NEW, "ADD") + s.string("init/") + s.i64(1), s.i64(1)),
                         (s.code(NEW, "SET") + s.string(f"/rank/{client}") + s.string("ready"), b""),
                         (s.code(NEW, "GET") + s.string(f"/rank/{client}"), s.string("ready"))):
        conv.send(CLIENT, query, think=0.0003)
        if reply:
            conv.send(SERVER, reply, think=0.0002)
    conv.close()


def build(cap: Capture, rng: random.Random, *, violating: bool) -> None:
    _rendezvous(cap, rng, INFERENCE_HOST if violating else TRAINING_WORKER_2, EPOCH)
    _rendezvous(cap, rng, TRAINING_WORKER, EPOCH + 0.5)


def write_fixtures(root: str | Path) -> None:
    root = Path(root)
    for kind, violating in (("positive", True), ("negative", False)):
        folder = root / STEM / kind
        folder.mkdir(parents=True, exist_ok=True)
        cap = Capture()
        build(cap, random.Random(f"{STEM}:{kind}"), violating=violating)
        cap.write(folder / "input.pcap")
        (folder / "policy.yaml").write_text(POLICY)
        count = 1 if violating else 0
        inside = RECORDS_PER_SESSION if violating else 2 * RECORDS_PER_SESSION
        policy_match = "{event_type: policy, policy.from_zone: inference, policy.to_zone: training, " \
                       "policy.app_proto: tcpstore, policy.port: 29500}"
        lines = [f"# {kind} fixture for {STEM} (sid {SID}); made by inspector.lab.policycaps",
                 "pcap: input.pcap",
                 f"rules: [../../../../{RULE_PATH}]",
                 "policy: policy.yaml",
                 "checks:",
                 f"  - filter: {{count: {count}, match: {{event_type: alert, alert.signature_id: {SID}}}}}",
                 f"  - filter: {{count: {count}, match: {policy_match}}}",
                 "  - filter: {count: 0, match: {event_type: policy, policy.from_zone: training}}",
                 f"  - filter: {{count: {2 * RECORDS_PER_SESSION}, match: {{event_type: tcpstore}}}}",
                 f"  - filter: {{count: {inside}, match: {{event_type: tcpstore, src_zone: training, "
                 "dest_zone: training}}"]
        (folder / "test.yaml").write_text("\n".join(lines) + "\n")
    (root / STEM / "README.md").write_text(
        f"# {STEM} (sid {SID})\n\n"
        "A PyTorch TCPStore rendezvous (VALIDATE, ADD, SET, GET on port 29500) from an inference host to the "
        "training job's store, which the fixture policy (`policy.yaml`: default deny, training -> training "
        "tcpstore/nccl allowed) does not allow, beside the same rendezvous from a training worker. The near "
        "miss makes both rendezvous from training workers.\n\n"
        "Both captures and policies are made by `python -m inspector.lab.policycaps tests/signatures` "
        "(deterministic: the same bytes every run).\n")


if __name__ == "__main__":
    write_fixtures(sys.argv[1] if len(sys.argv) > 1 else "tests/signatures")
