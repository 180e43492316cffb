"""`inspector lab list|generate`: scenarios, deterministic captures, ground truth that matches the wire."""

from __future__ import annotations

import hashlib
import itertools
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import dpkt
import pytest

from inspector.communityid import community_id
from inspector.lab.generate import generate_lab, write_lab, write_shipped
from inspector.lab.scenarios import SCENARIOS
from inspector.lab.truth import BENIGN, load_truth

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "pcaps" / "lab"
MSS = 1460


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspector.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def _tcp_packets(path: Path):
    with path.open("rb") as handle:
        for ts, buf in dpkt.pcap.Reader(handle):
            ip = dpkt.ethernet.Ethernet(buf).data
            assert isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.tcp.TCP)
            yield ts, ip, ip.data


def test_shipped_lab_captures_regenerate_byte_for_byte(tmp_path):
    written = write_shipped(tmp_path)
    assert {p.pcap.stem for p in written} == set(SCENARIOS) | {"mixed"}
    shipped = sorted(p.name for p in SHIPPED.iterdir())
    assert shipped == sorted(p.name for p in tmp_path.iterdir())
    for name in shipped:
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), (
            f"pcaps/lab/{name} is stale: run `python -m inspector.lab.generate pcaps/lab`")


def test_at_least_twelve_scenarios_each_described_with_atlas_steps_and_a_replay():
    assert len(SCENARIOS) >= 12
    for scenario in SCENARIOS.values():
        assert scenario.title and scenario.description
        assert scenario.atlas and all(t.startswith("AML.T") for t in scenario.atlas), scenario.name
        assert scenario.steps and all(step.description for step in scenario.steps), scenario.name
        assert set(scenario.transports) <= {"http", "grpc", "tcp"} and scenario.transports, scenario.name


def test_same_seed_same_bytes_other_seed_other_bytes():
    names = ["shadowray", "bucket-poisoning", "model-extraction-rate"]
    first, _ = generate_lab(names, seed=11, benign=15, duration=120)
    again, _ = generate_lab(names, seed=11, benign=15, duration=120)
    other, _ = generate_lab(names, seed=12, benign=15, duration=120)
    assert first.capture.frames == again.capture.frames
    assert first.capture.frames != other.capture.frames


def test_truth_labels_every_connection_on_the_wire_and_nothing_else(tmp_path):
    made = write_lab(tmp_path, list(SCENARIOS), name="all", seed=3, benign=40, duration=400)
    truth = load_truth(made.truth)
    syns = {}
    for ts, ip, tcp in _tcp_packets(made.pcap):
        if tcp.flags & dpkt.tcp.TH_SYN and not tcp.flags & dpkt.tcp.TH_ACK:
            syns[community_id(ip.src, ip.dst, 6, tcp.sport, tcp.dport)] = ts
    flows = {flow.community_id: flow for flow in truth.flows}
    assert set(syns) == set(flows)
    for cid, flow in flows.items():
        assert flow.start == pytest.approx(syns[cid], abs=1e-6)
        assert flow.label == BENIGN or flow.label in SCENARIOS
        assert all(tx.label == flow.label for tx in flow.transactions)
    labels = {flow.label for flow in truth.flows}
    assert labels == set(SCENARIOS) | {BENIGN}
    assert truth.packets == made.packets
    # Every scenario's steps have transactions on the wire.
    steps = {(flow.label, tx.step) for flow in truth.flows for tx in flow.transactions if tx.step}
    for record in truth.scenarios:
        for step in record.steps:
            assert (record.name, step.id) in steps, (record.name, step.id)


def test_wire_is_a_real_tcp_stack_handshakes_mss_acks_teardown_jitter(tmp_path):
    made = write_lab(tmp_path, ["model-extraction-rate", "malicious-model-pull"], seed=5, benign=30, duration=200)
    flags = defaultdict(list)
    largest = 0
    for _, ip, tcp in _tcp_packets(made.pcap):
        key = tuple(sorted([(ip.src, tcp.sport), (ip.dst, tcp.dport)]))
        flags[key].append(tcp.flags)
        largest = max(largest, len(tcp.data))
    assert largest <= MSS
    for key, seen in flags.items():
        assert seen[0] == dpkt.tcp.TH_SYN, key
        assert seen[1] == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, key
        assert sum(bool(f & dpkt.tcp.TH_FIN) for f in seen) == 2, key
        assert all(f & dpkt.tcp.TH_ACK for f in seen[1:]), key
    truth = load_truth(made.truth)
    flood = [tx.start for flow in truth.flows if flow.label == "model-extraction-rate" for tx in flow.transactions
             if tx.step == "query-flood"]
    gaps = {round(b - a, 4) for a, b in itertools.pairwise(flood)}
    assert len(flood) >= 100 and len(gaps) > 20, "inter-request times should jitter"


def test_s3_requests_carry_botocore_sigv4_with_the_body_hash(tmp_path):
    made = write_lab(tmp_path, ["bucket-poisoning", "malicious-model-pull"], seed=2)
    streams: dict[tuple, bytes] = defaultdict(bytes)
    for _, ip, tcp in _tcp_packets(made.pcap):
        if tcp.dport in (80, 9000) and tcp.data:
            streams[(ip.src, tcp.sport)] += tcp.data
    requests = 0
    for data in streams.values():
        while data:
            request = dpkt.http.Request(data)
            auth = request.headers["authorization"]
            assert auth.startswith("AWS4-HMAC-SHA256 Credential=AKIALAB") and "Signature=" in auth
            signature = auth.rsplit("Signature=", 1)[1]
            assert len(signature) == 64 and int(signature, 16) >= 0
            assert request.headers["x-amz-content-sha256"] == hashlib.sha256(request.body).hexdigest()
            requests += 1
            data = data[len(bytes(request)):]
    assert requests >= 3


def test_cli_list_and_generate(tmp_path):
    listing = _cli("lab", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    rows = json.loads(listing.stdout)
    assert {row["name"] for row in rows} == set(SCENARIOS)
    out = tmp_path / "lab"
    done = _cli("lab", "generate", "tensor-bomb", "shelltorch", "-o", str(out), "--seed", "4", "--benign", "10")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["lab.pcap", "lab.truth.json", "policy.yaml", "site.yaml"]
    truth = json.loads((out / "lab.truth.json").read_text())
    assert truth["format"] == "inspector-lab-truth/1" and truth["seed"] == 4 and truth["benign_sessions"] == 10
    assert {s["name"] for s in truth["scenarios"]} == {"tensor-bomb", "shelltorch"}
    unknown = _cli("lab", "generate", "no-such-attack", "-o", str(tmp_path / "x"))
    assert unknown.returncode == 2 and "no-such-attack" in (unknown.stdout + unknown.stderr)
