"""Egress control: allowlists of destinations for workloads' outbound traffic (docs/egress.md).

`EgressPolicy` (policy.py) reads the `egress:` section of the site config and decides, for a
CONNECT or a request, whether its destination is allowed: a host, an S3 bucket, a model registry
repository. The decision is the record's `egress` object (fields.py), which rules match
(signatures/egress/). The live sidecar applies it in forward mode (`inspector proxy --mode
forward`); offline, `inspector analyze --egress` applies it to captures of a workload's
outbound traffic.
"""

from inspector.egress.policy import EgressPolicy, egress_policy_from_config

__all__ = ["EgressPolicy", "egress_policy_from_config"]
