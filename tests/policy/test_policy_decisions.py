"""First match wins, the default decides the rest, protocols are layers, ports are ranges."""

from __future__ import annotations

import pytest

from inspector.policy import load_policy_text
from inspector.policy.model import record_layers

POLICY = load_policy_text("""\
default: deny
zones:
  - {name: training, plane: data, cidrs: [10.10.0.0/16]}
  - {name: inference, plane: data, cidrs: [10.20.0.0/16]}
  - {name: storage, plane: data, cidrs: [10.40.0.0/24]}
  - {name: admin, plane: management, cidrs: [10.99.0.0/24]}
rules:
  - {name: collectives, from: training, to: training, protocols: [nccl, tcpstore]}
  - {name: no-mgmt-port, action: deny, from: any, to: inference, ports: [8081]}
  - {name: serving, from: [training, outside], to: inference, protocols: [grpc, llm]}
  - {name: pulls, from: inference, to: storage, protocols: [http]}
  - {name: nccl-ports, from: training, to: storage, ports: [40000-40100]}
  - {name: admin, from: admin, to: any}
""", "p.yaml")


@pytest.mark.parametrize(("from_zone", "to_zone", "layers", "port", "allowed", "rule"), [
    ("training", "training", {"tcpstore"}, 29500, True, "collectives"),
    ("training", "training", {"http", "triton"}, 8000, False, None),  # default deny
    ("training", "inference", {"triton", "grpc", "http", "http2"}, 8001, True, "serving"),  # grpc layer
    ("training", "inference", {"triton", "http"}, 8000, False, None),  # Triton over REST has no grpc layer
    ("outside", "inference", {"llm", "http"}, 8000, True, "serving"),
    ("outside", "inference", {"torchserve", "grpc", "http"}, 8081, False, "no-mgmt-port"),  # first match wins
    ("inference", "storage", {"s3", "http"}, 9000, True, "pulls"),  # http allows what rides on it
    ("training", "storage", {"failed"}, 40050, True, "nccl-ports"),  # port rule: any protocol
    ("training", "storage", {"failed"}, 40101, False, None),
    ("training", "storage", {"failed"}, None, False, None),  # no port (ICMP) never matches a port rule
    ("admin", "training", {"failed"}, 22, True, "admin"),
])
def test_decide(from_zone, to_zone, layers, port, allowed, rule):
    decision = POLICY.decide(from_zone, to_zone, frozenset(layers), port)
    assert (decision.allowed, decision.rule.name if decision.rule else None) == (allowed, rule)


def test_default_allow_lets_through_what_no_rule_denies():
    policy = load_policy_text("default: allow\nzones:\n  - {name: a, plane: data, cidrs: [10.0.0.0/8]}\n"
                              "rules:\n  - {name: no-ssh, action: deny, from: any, to: a, ports: [22]}\n", "p.yaml")
    assert policy.decide("outside", "a", frozenset({"failed"}), 22).allowed is False
    assert policy.decide("outside", "a", frozenset({"http"}), 80).allowed is True


def test_record_layers_are_event_type_protocol_objects_and_app_proto():
    record = {"event_type": "triton", "app_proto": "http2", "http": {}, "grpc": {}, "triton": {},
              "principal": {"subject": "x"}, "src_zone": "a"}
    assert record_layers(record, POLICY.protocols) == frozenset({"triton", "grpc", "http", "http2"})


def test_rule_descriptions():
    assert [r.describe() for r in POLICY.rules] == [
        "training -> training nccl/tcpstore", "any -> inference ports 8081",
        "outside,training -> inference grpc/llm", "inference -> storage http",
        "training -> storage ports 40000-40100", "admin -> any"]
