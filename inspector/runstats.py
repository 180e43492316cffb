"""What an offline run counted, as the EVE `stats` record and as the summary's "not analysed" rows.

Every cap and every loss below the protocol parsers is counted (ARCHITECTURE.md: "bounded by
construction ... a counter saying when they were hit"): frames the decoder could not use, bytes
the capture missed, flows evicted at the flow table's cap, connections whose protocol was not
recognised. `inspector analyze` writes them at the end of the run as one record, the shape of
Suricata's `stats` event (one object per subsystem, counters as integers), so a SOC pipeline
keeps how much of a capture was actually inspected next to the alerts:

    {"timestamp": ..., "event_type": "stats", "stats": {
        "capture": {"files": 1, "files_damaged": 0, "packets": 538, "bytes": 331802, "dropped": 0},
        "decoder": {"non_ip": 538},
        "flow": {"total": 0, "evicted": 0, "timed_out": 0, "by_app": {}},
        "tcp": {}, "app_layer": {}, "records": {"transactions": {}, "anomalies": 0, "alerts": 0}}}

`decoder`, `tcp` and `app_layer` hold the counters that are not zero (their names are the
decoder's, the reassembler's and the stream router's; docs/eve.md lists them). With rules, a
`detect` object holds the rule engine's: `rules_loaded` always, then the counters that are not
zero, under Suricata's names where it has one (`alert`, `alerts_suppressed`), e.g.
`"detect": {"rules_loaded": 62, "alert": 40, "matches": 49, "alerts_suppressed": 9}`. The timestamp is
the capture time of the run's last packet, as every offline record's, so the record is the same
in every run of the same captures, with or without `--workers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from inspector.records import format_ts

if TYPE_CHECKING:
    from inspector.analyze import RunStats

#: Counters of the flow table kept with the reassembler's (RunStats.tcp), shown under `flow`.
_FLOW_COUNTERS = {"flows_evicted": "evicted", "flows_timed_out": "timed_out"}

#: Decoder counters that are frames or fragments the analysis could not use, with their reason.
DECODER_LOSSES = {
    "unsupported_linktype": "link type not decoded",
    "truncated_link": "link header cut short",
    "non_ip": "not IPv4 or IPv6",
    "bad_ip_header": "bad IP header",
    "truncated_ip": "IP packet cut short (not by the snap length)",
    "snapped": "IP packets cut by the capture's snap length",
    "bad_ipv6_extension": "bad IPv6 extension header",
    "truncated_tcp": "TCP header cut short",
    "bad_tcp_header": "bad TCP header",
    "truncated_udp": "UDP header cut short",
    "bad_udp_header": "bad UDP header",
    "fragments_dropped": "IP fragments dropped (bad or over the caps)",
    "fragments_expired": "IP fragment sets expired unfinished",
    "fragments_incomplete": "IP fragment sets unfinished at the end",
    "fragment_sets_evicted": "IP fragment sets evicted at the cap",
    "anomalies_dropped": "decode anomalies not reported (over the cap)",
    "anomalies_capped": "decode anomalies counted, not written (1000 of their kind already)",
}

#: Counters of the reassembler, the flow table and the stream router that mean something was
#: not seen or not parsed, with what they count.
STREAM_LOSSES = {
    "gaps": "TCP gaps (bytes the capture missed)",
    "ooo_cap_hits": "TCP out-of-order buffer full (gap declared)",
    "midstream_pickups": "TCP directions picked up without their start",
    "flows_evicted": "flows evicted at the flow table's cap",
    "unknown_protocol": "TCP flows in no protocol we parse",
    "gap_before_detection": "TCP flows lost to gaps before their protocol was told",
    "tls_inner_unknown_protocol": "decrypted TLS flows in no protocol we parse",
    "tls_inner_gap_before_detection": "decrypted TLS flows with no readable plaintext to tell their protocol",
    "tunnel_unknown_protocol": "tunnelled streams in no protocol we parse",
    "tunnel_gap_before_detection": "tunnelled streams lost to gaps before their protocol was told",
    "parser_errors": "flows whose parser failed (inspection stopped)",
    "frame_errors": "frames the decoder or flow table failed on (skipped)",
    "tls_records_not_decrypted": "TLS records not decrypted (no keys, unsupported)",
    "tls_records_failed": "TLS records failing authentication (wrong keys)",
    "tls_records_after_renegotiation": "TLS records after a renegotiation (its keys are not derived)",
    "tls_records_early_data": "TLS 0-RTT records not decrypted (no early traffic secret)",
    "tls_handshakes_decrypted_in_part": "TLS sessions decrypted in part (a side's keys missing or wrong)",
    "tls_flows_without_handshake": "TLS flows without their handshake in the capture (not decryptable)",
}


#: The rule engine's counters (inspector.engine.Engine.counters) in the `detect` object, by the
#: name there: Suricata's `detect.alerts_suppressed` for matches a site suppression silenced.
DETECT_COUNTERS = {
    "matches": "matches",  # rule matches, before suppressions and rate windows
    "suppressed": "alerts_suppressed",
    "rate_pending": "rate_pending",  # rate-rule matches below the rule's count
    "rate_quiet": "rate_quiet",  # rate-rule matches inside the window after the key's alert
    "rate_keys": "rate_keys",  # rate-window keys held at the end
    "rate_keys_evicted": "rate_keys_evicted",  # keys evicted at engine.rate_max_keys
}


def _nonzero(counters: Any) -> dict[str, int]:
    return {name: int(count) for name, count in sorted(counters.items()) if count}


def stats_object(stats: RunStats) -> dict[str, Any]:
    """The `stats` object of the run's record."""
    tcp = {name: count for name, count in _nonzero(stats.tcp).items() if name not in _FLOW_COUNTERS}
    flow: dict[str, Any] = {"total": stats.flows}
    for counter, name in _FLOW_COUNTERS.items():
        flow[name] = int(stats.tcp.get(counter, 0))
    flow["by_app"] = _nonzero(stats.flows_by_app)
    result: dict[str, Any] = {
        "capture": {"files": len(stats.files), "files_damaged": sum(1 for f in stats.files if f.error),
                    "packets": stats.packets, "bytes": stats.frame_bytes, "dropped": stats.dropped},
        "decoder": _nonzero(stats.decode),
        "flow": flow,
        "tcp": tcp,
        "app_layer": _nonzero(stats.detection),
    }
    detect = detect_object(stats)
    if detect is not None:
        result["detect"] = detect
    result["records"] = {"transactions": _nonzero(stats.transactions), "anomalies": sum(stats.anomalies.values()),
                         "alerts": sum(stats.alerts.values())}
    return result


def detect_object(stats: RunStats) -> dict[str, int] | None:
    """The `detect` object: the rule engine's counters; None when the run had no rules."""
    if stats.engine is None:
        return None
    detect = {"rules_loaded": int(stats.engine.get("rules", 0))}
    alerts = sum(stats.alerts.values())
    if alerts:
        detect["alert"] = alerts
    for counter, name in DETECT_COUNTERS.items():
        if stats.engine.get(counter):
            detect[name] = int(stats.engine[counter])
    return detect


def stats_record(stats: RunStats) -> dict[str, Any]:
    """The EVE `stats` record of a run (written last by `inspector analyze`)."""
    return {"timestamp": format_ts(stats.last_ts), "event_type": "stats", "stats": stats_object(stats)}


def not_analysed(stats: RunStats) -> list[tuple[str, int, int | None]]:
    """(what, count, bytes or None) for every loss the run counted (the capturing host's drops,
    the decoder's, then the streams'); empty when the whole capture was analysed."""
    rows: list[tuple[str, int, int | None]] = []
    if stats.dropped:
        rows.append(("packets the capturing host dropped (pcapng statistics)", stats.dropped, None))
    for counter, what in DECODER_LOSSES.items():
        if stats.decode.get(counter):
            rows.append((what, int(stats.decode[counter]), None))
    streams = {**stats.tcp, **stats.detection}
    for counter, what in STREAM_LOSSES.items():
        if streams.get(counter):
            size = int(stats.tcp.get("gap_bytes", 0)) if counter == "gaps" else None
            rows.append((what, int(streams[counter]), size))
    return rows
