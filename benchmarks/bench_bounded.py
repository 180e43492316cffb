"""Bounded memory under rotating sources: 100,000 addresses through the flow table and the rate
windows, with one steady attacker among them.

A capture is generated (raw IPv4, streamed to a temporary file): each rotating source opens one
TCP connection, sends one HTTP request, gets one answer and never closes (the flow stays until
evicted); every `--attacker-every` rotating flows the attacker (10.99.0.1) makes one request on
its own connection; 1000 new sources a second of capture time (the attacker:
50 requests/s). One rate rule counts requests per `src_ip` (count 50 in 10 s), so every
rotating source is a rate key too. The flow table holds `--max-flows` flows and the rate store
`--rate-keys` keys (defaults far below 100,000): both must evict, memory must stay under the
bound, and the attacker must still alert (its key stays recently used, so LRU never drops it).

Prints peak RSS (and, with --tracemalloc, the traced peak), flows and rate keys evicted, alerts
for the attacker and for anyone else, and a verdict against the stated bound.

    python benchmarks/bench_bounded.py [--sources 100000] [--max-flows 10000] [--rate-keys 10000]
                                       [--bound-mib 200] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import resource
import struct
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector.analyze import Analyzer
from inspector.engine import Engine
from inspector.lab.craft import write_pcap
from inspector.limits import Limits
from inspector.rules import load_config, load_rules

ATTACKER = bytes([10, 99, 0, 1])
SERVER = bytes([10, 0, 0, 2])
RATE_RULE = """title: Request burst from one source
id: 00000000-0000-4000-8000-000009900001
sid: 9900001
status: test
level: high
event: http
detection:
  selection:
    http.http_method: GET
  condition: selection
rate: {by: [src_ip], count: 50, window: 10s}
"""
SYN, ACK, PSH = 0x02, 0x10, 0x08
LINKTYPE_RAW = 101


def _ipv4(src: bytes, dst: bytes, sport: int, dport: int, flags: int, seq: int, ack: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    return header + tcp


def _connection(ts: float, client: bytes, sport: int, path: bytes) -> Iterator[tuple[float, bytes]]:
    request = b"GET " + path + b" HTTP/1.1\r\nHost: models\r\nUser-Agent: bench\r\n\r\n"
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    yield ts, _ipv4(client, SERVER, sport, 8000, SYN, 100, 0, b"")
    yield ts, _ipv4(SERVER, client, 8000, sport, SYN | ACK, 500, 101, b"")
    yield ts, _ipv4(client, SERVER, sport, 8000, ACK | PSH, 101, 501, request)
    yield ts, _ipv4(SERVER, client, 8000, sport, ACK | PSH, 501, 101 + len(request), response)


def frames(sources: int, attacker_every: int, duration: float) -> Iterator[tuple[float, bytes]]:
    """Rotating sources 10.(1..).x.y, one connection each, spread over `duration` seconds."""
    start = 1_700_000_000.0
    for n in range(sources):
        ts = start + duration * n / sources
        client = bytes([10, 1 + (n >> 16), (n >> 8) & 0xFF, n & 0xFF])
        yield from _connection(ts, client, 40000 + n % 20000, b"/v2/models/m/ready")
        if n % attacker_every == 0:
            yield from _connection(ts, ATTACKER, 1024 + (n // attacker_every) % 60000, b"/v2/repository/index")


@dataclass
class Result:
    sources: int
    packets: int
    records: int
    flows_evicted: int
    rate_keys_evicted: int
    rate_keys_held: int
    attacker_alerts: int
    other_alerts: int
    seconds: float
    peak_rss_mib: float
    traced_peak_mib: float | None


def run(sources: int = 100_000, *, max_flows: int = 10_000, rate_keys: int = 10_000, attacker_every: int = 20,
        rate: float = 1000.0, trace: bool = False, workdir: Path | None = None) -> Result:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        capture = Path(tmp, "rotating.pcap")
        write_pcap(capture, frames(sources, attacker_every, sources / rate), linktype=LINKTYPE_RAW)
        rules = Path(tmp, "rules")
        rules.mkdir()
        (rules / "burst.yml").write_text(RATE_RULE)
        config_path = Path(tmp, "site.yaml")
        config_path.write_text(f"engine:\n  rate_max_keys: {rate_keys}\n")
        config = load_config(str(config_path))
        engine = Engine(load_rules([str(rules)], config), config)
        alerts = {"attacker": 0, "other": 0}
        records = 0

        def write(record: dict) -> None:
            nonlocal records
            records += 1
            if record["event_type"] == "alert":
                alerts["attacker" if record["src_ip"] == "10.99.0.1" else "other"] += 1

        analyzer = Analyzer(write, engine, limits=Limits(max_flows=max_flows), flow_records=False)
        if trace:
            tracemalloc.start()
        started = time.perf_counter()
        analyzer.analyze_file(capture)
        seconds = time.perf_counter() - started
        traced = tracemalloc.get_traced_memory()[1] / (1 << 20) if trace else None
        if trace:
            tracemalloc.stop()
    return Result(sources=sources, packets=analyzer.stats.packets, records=records,
                  flows_evicted=analyzer.stats.tcp["flows_evicted"], rate_keys_evicted=engine.rate_store.evicted,
                  rate_keys_held=len(engine.rate_store), attacker_alerts=alerts["attacker"],
                  other_alerts=alerts["other"], seconds=seconds,
                  peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, traced_peak_mib=traced)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", type=int, default=100_000)
    parser.add_argument("--max-flows", type=int, default=10_000)
    parser.add_argument("--rate-keys", type=int, default=10_000)
    parser.add_argument("--attacker-every", type=int, default=20, help="one attacker request per N sources")
    parser.add_argument("--bound-mib", type=float, default=200.0, help="stated peak RSS bound (MiB)")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations (slower)")
    args = parser.parse_args()
    result = run(args.sources, max_flows=args.max_flows, rate_keys=args.rate_keys,
                 attacker_every=args.attacker_every, trace=args.tracemalloc)
    print(f"sources            {result.sources}")
    print(f"packets            {result.packets} in {result.seconds:.1f} s ({result.packets / result.seconds:,.0f}/s)")
    print(f"flows evicted      {result.flows_evicted} (table holds {args.max_flows})")
    print(f"rate keys evicted  {result.rate_keys_evicted} (store holds {result.rate_keys_held} of {args.rate_keys})")
    print(f"attacker alerts    {result.attacker_alerts}")
    print(f"other alerts       {result.other_alerts}")
    print(f"peak RSS           {result.peak_rss_mib:.0f} MiB (bound {args.bound_mib:.0f} MiB)")
    if result.traced_peak_mib is not None:
        print(f"traced peak        {result.traced_peak_mib:.1f} MiB")
    ok = (result.peak_rss_mib <= args.bound_mib and result.attacker_alerts > 0 and result.other_alerts == 0
          and result.flows_evicted > 0 and result.rate_keys_evicted > 0)
    print(f"verdict            {'bounded, attacker detected' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
