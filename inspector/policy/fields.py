"""Fields the segmentation policy adds to EVE records (a field-declaring module, see fields.py).

Every record of a flow carries `src_zone` and `dest_zone` when a policy is loaded (absent
otherwise); a flow the policy does not allow gives one `policy` record per flow and protocol.
"""

from __future__ import annotations

from inspector.fields import ALL_EVENTS, declare

declare(ALL_EVENTS, [
    ("src_zone", "string", "Policy zone of src_ip (only when a segmentation policy is loaded)."),
    ("dest_zone", "string", "Policy zone of the flow's destination (live: of the upstream server)."),
])

declare("policy", [
    ("policy.verdict", "string", "denied: the policy does not allow this flow."),
    ("policy.name", "string", "Name of the policy that decided."),
    ("policy.rule", "string", "Name of the rule that denied the flow (absent when the default did)."),
    ("policy.default", "string", "The policy's default for flows no rule matches: deny or allow."),
    ("policy.from_zone", "string", "Source zone of the flow."),
    ("policy.to_zone", "string", "Destination zone of the flow."),
    ("policy.from_plane", "string", "Plane of the source zone: control, data or management."),
    ("policy.to_plane", "string", "Plane of the destination zone: control, data or management."),
    ("policy.app_proto", "string", "Protocol checked: the transaction's event type, or failed."),
    ("policy.port", "integer", "Destination port checked."),
    ("policy.reason", "string", "Why, in words."),
])
