"""The egress decision on offline HTTP records: origin-form and absolute-form targets."""

from __future__ import annotations

from inspector.egress.policy import EgressPolicy, egress_decision

POLICY = EgressPolicy.from_section({"registries": ["huggingface.co/acme/*"], "buckets": ["ml-models-prod"]})


def test_a_url_inside_the_query_is_not_taken_for_the_target():
    decision = egress_decision(POLICY, {"hostname": "huggingface.co", "http_method": "GET",
                                        "url": "/acme/m/resolve/main/model.bin?next=https://evil.example/x"})
    assert decision["allowed"] is True and decision["repo"] == "acme/m"


def test_absolute_form_targets_name_host_and_path():
    allowed = egress_decision(POLICY, {"http_method": "GET", "url": "http://huggingface.co/acme/m/resolve/main/a.bin"})
    assert (allowed["host"], allowed["repo"], allowed["allowed"]) == ("huggingface.co", "acme/m", True)
    refused = egress_decision(POLICY, {"http_method": "GET", "url": "http://huggingface.co/other/m/resolve/main/a.bin"})
    assert (refused["repo"], refused["allowed"]) == ("other/m", False)
    bucket = egress_decision(POLICY, {"http_method": "GET", "url": "http://s3.amazonaws.com/ml-models-prod/m.pt"})
    assert (bucket["bucket"], bucket["allowed"]) == ("ml-models-prod", True)


def test_connect_is_decided_on_its_authority():
    decision = egress_decision(POLICY, {"http_method": "CONNECT", "url": "huggingface.co:443"})
    assert decision == {"host": "huggingface.co", "port": 443, "phase": "connect", "allowed": True,
                        "matched": "registry_host", "entry": "huggingface.co/acme/*"}
