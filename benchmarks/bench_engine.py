"""Rule engine throughput with 10, 100 and 1000 rules over the same records.

Rules are generated (seeded) over http and grpc fields in a fixed mix that repeats every ten
rules, so each set has the same proportions: exact gRPC methods, service prefixes, URL prefixes
with a method, URL and User-Agent substrings, status + host, a rate rule every 20 and a regex
rule (not indexable) every 100. Records are a seeded mix of Triton-style gRPC and REST traffic
with a few suspicious requests. All three sets run in this invocation on the same records; the
printed ratios time(N rules) / time(10 rules) are the figures to watch (goal: 1000/10 <= 1.5).

    python benchmarks/bench_engine.py [--records 20000] [--repeat 7] [--no-index] [--unique-urls]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inspector import fields
from inspector.engine import Engine
from inspector.rules import Config, load_rules
from inspector.rules.testing import SAMPLE_FIELDS, isolated_catalogue

GRPC_METHODS = ["ModelInfer", "ModelMetadata", "ModelReady", "ServerLive", "ServerReady", "RepositoryIndex",
                "RepositoryModelLoad", "LogSettings", "TraceSetting", "ModelStatistics"]
ADMIN_METHODS = ["RepositoryModelLoad", "LogSettings", "TraceSetting"]
MODELS = [f"model{i}" for i in range(40)]
AGENTS = ["grpc-python/1.62.1", "python-requests/2.31.0", "curl/8.5.0", "Go-http-client/2.0",
          "tritonclient/2.73.0", "Mozilla/5.0 (X11; Linux x86_64)"]
TOKENS = ["../", "%2e%2e%2f", "/etc/passwd", "<script", "union select", "${jndi:", "\\x00", "cmd.exe"]
MIX = ("grpc_method", "grpc_method", "grpc_service", "grpc_method", "url_prefix", "url_prefix",
       "url_contains", "url_contains", "agent_contains", "status_host")


def rule_detection(i: int, kind: str, rng: random.Random) -> tuple[str, dict, dict]:
    """(event, detection, extra keys) of generated rule number i."""
    hit = rng.random() < 0.01  # a few rules name values the traffic really has (admin calls, probes)
    if i % 100 == 99:
        regex = rf"^/v2/models/[a-z]+{i}/(load|unload)$"
        return "http", {"sel": {"http.url|re": regex}, "condition": "sel"}, {}
    if i % 20 == 19:
        method = rng.choice(GRPC_METHODS) if hit else f"Method{i}"
        return "grpc", {"sel": {"grpc.method": method}, "condition": "sel"}, {
            "rate": {"by": ["src_ip"], "count": 500, "window": "60s"}}
    if kind == "grpc_method":
        method = rng.choice(ADMIN_METHODS) if hit else f"Method{i}"
        return "grpc", {"sel": {"grpc.method": method, "grpc.service": "inference.GRPCInferenceService"},
                        "filter": {"src_ip|cidr": ["10.250.0.0/16"]}, "condition": "sel and not filter"}, {}
    if kind == "grpc_service":
        return "grpc", {"sel": {"grpc.service|startswith": f"vendor{i}.api."}, "condition": "sel"}, {}
    if kind == "url_prefix":
        return "http", {"sel": {"http.http_method": "POST", "http.url|startswith": f"/v2/models/private{i}/"},
                        "condition": "sel"}, {}
    if kind == "url_contains":
        token = rng.choice(TOKENS) if hit else f"probe{i:04d}"
        return "http", {"sel": {"http.url|contains": [token, f"x{i:04d}y"]}, "condition": "sel"}, {}
    if kind == "agent_contains":
        return "http", {"sel": {"http.http_user_agent|contains": f"scanner-{i:04d}"}, "condition": "sel"}, {}
    return "http", {"sel": {"http.status|gte": 500, "http.hostname": f"host{i}.svc.cluster.local"},
                    "condition": "sel"}, {}


def write_rules(directory: Path, count: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for i in range(count):
        event, detection, extra = rule_detection(i, MIX[i % len(MIX)], rng)
        doc = {"title": f"Generated rule {i}", "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
               "sid": 9_000_000 + i, "status": "experimental", "level": "medium", "event": event,
               "detection": detection, **extra}
        (directory / f"rule_{i:04d}.yml").write_text(yaml.safe_dump(doc, sort_keys=False))


def make_records(count: int, seed: int = 11, unique_urls: bool = False) -> list[tuple[dict, float]]:
    rng = random.Random(seed)
    records = []
    ts = 1_767_323_045.0
    for _ in range(count):
        ts += rng.expovariate(200.0)
        src = f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        common = {"timestamp": "2026-01-02T03:04:05.000000+0000", "flow_id": rng.getrandbits(40),
                  "community_id": "1:AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "src_ip": src,
                  "src_port": rng.randrange(32768, 61000),
                  "dest_ip": "10.100.0.10", "proto": "TCP"}
        roll = rng.random()
        if roll < 0.65:  # Triton gRPC, mostly inference
            method = "ModelInfer" if rng.random() < 0.75 else rng.choice(GRPC_METHODS)
            record = {**common, "event_type": "grpc", "dest_port": 8001, "app_proto": "http2",
                      "http": {"hostname": "triton.svc.cluster.local",
                               "url": f"/inference.GRPCInferenceService/{method}",
                               "http_method": "POST", "protocol": "HTTP/2", "status": 200,
                               "http_user_agent": "grpc-python/1.62.1",
                               "http_content_type": "application/grpc"},
                      "grpc": {"service": "inference.GRPCInferenceService", "method": method,
                               "status": 0 if rng.random() < 0.97 else 14,
                               "request": {"messages": 1, "lengths": [rng.randrange(100, 600_000)]}}}
        else:  # REST (KServe v2 / health / metrics), a few suspicious
            model = rng.choice(MODELS)
            url = rng.choice([f"/v2/models/{model}/infer", "/v2/health/ready", f"/v2/models/{model}",
                              "/metrics", f"/v2/models/{model}/versions/1/infer"])
            if rng.random() < 0.03:
                url = f"/v2/models/{model}/{rng.choice(TOKENS)}x"
            record = {**common, "event_type": "http", "dest_port": 8000, "app_proto": "http",
                      "http": {"hostname": "triton.svc.cluster.local", "url": url,
                               "http_method": "POST" if url.endswith("infer") else "GET",
                               "protocol": "HTTP/1.1",
                               "status": rng.choice([200] * 30 + [400, 404, 500, 503]),
                               "http_user_agent": rng.choice(AGENTS), "length": rng.randrange(20, 5000)}}
        if unique_urls:  # worst case for the trigram memo: no URL repeats
            record["http"]["url"] += f"?request_id={rng.getrandbits(64):016x}"
        records.append((record, ts))
    return records


def run_once(ruleset, records, index: bool = True) -> tuple[float, float, Engine]:
    """(CPU seconds, wall seconds, engine) for one pass over the records with a fresh engine."""
    engine = Engine(ruleset)
    if not index:  # dispatch by layer only: every rule of the record's layers is evaluated
        engine.dispatcher.choices = [None] * len(ruleset.rules)
    process = engine.process
    cpu, wall = time.process_time(), time.perf_counter()
    for record, ts in records:
        process(record, ts)
    return time.process_time() - cpu, time.perf_counter() - wall, engine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-index", action="store_true", help="layer dispatch only, for comparison")
    parser.add_argument("--unique-urls", action="store_true",
                        help="give every record its own URL (worst case for the index's memo)")
    args = parser.parse_args()
    try:
        fields.catalogue()
        catalogue_note = "real field catalogue"
        context = None
    except ImportError:
        catalogue_note = "sample field catalogue (parsers not importable)"
        context = isolated_catalogue(SAMPLE_FIELDS)
        context.__enter__()
    records = make_records(args.records, unique_urls=args.unique_urls)
    sizes = (10, 100, 1000)
    rulesets, load_seconds = {}, {}
    for count in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            write_rules(Path(tmp), count)
            start = time.perf_counter()
            rulesets[count] = load_rules(tmp, Config())
            load_seconds[count] = time.perf_counter() - start
    # Interleaved repeats, so a busy neighbour slows every size alike; best CPU time of each.
    runs: dict[int, list[tuple[float, float, Engine]]] = {count: [] for count in sizes}
    for _ in range(args.repeat):
        for count in sizes:
            runs[count].append(run_once(rulesets[count], records, index=not args.no_index))
    print(f"engine benchmark: {len(records)} records, best of {args.repeat} interleaved runs (CPU time), "
          f"{catalogue_note}{', index off' if args.no_index else ''}{', unique URLs' if args.unique_urls else ''}")
    print(f"{'rules':>6} {'load s':>7} {'indexed':>8} {'cand/rec':>9} {'alerts':>7} {'records/s':>10} "
          f"{'us/rec':>7} {'x 10':>6} {'wall x 10':>10}")
    best = {count: min(r[0] for r in runs[count]) for count in sizes}
    best_wall = {count: min(r[1] for r in runs[count]) for count in sizes}
    for count in sizes:
        engine = runs[count][0][2]
        counters = engine.counters()
        print(f"{count:>6} {load_seconds[count]:>7.2f} {engine.dispatcher.indexed:>8} "
              f"{counters['evaluations'] / counters['records']:>9.2f} {counters['alerts']:>7} "
              f"{len(records) / best[count]:>10,.0f} {best[count] * 1e6 / len(records):>7.2f} "
              f"{best[count] / best[10]:>6.2f} {best_wall[count] / best_wall[10]:>10.2f}")
    spread = max(statistics.pstdev(r[0] for r in runs[c]) / best[c] for c in sizes)
    if spread > 0.1:
        print(f"(run-to-run spread up to {spread:.0%}: the machine is busy; the best runs are compared)")
    print(f"ratios: 100/10 = {best[100] / best[10]:.2f}, 1000/10 = {best[1000] / best[10]:.2f} (goal <= 1.5)")
    if context is not None:
        context.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
