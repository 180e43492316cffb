"""The baseline: its statistics, the anomalies it reports, determinism, bounded memory, files."""

from __future__ import annotations

import itertools
import json
import math
import random

import pytest

from inspector.anomaly import Baseline, BaselineError, BaselineParams
from inspector.anomaly.features import http_path_subject, shape_patterns, subject_of
from inspector.anomaly.stats import NoveltySet, RateCounter, RobustEwma

T0 = 1_767_225_600.0


def triton(client: str, model: str = "resnet", shape=(1, 4), size: int = 100, port: int = 8000) -> dict:
    return {"timestamp": "2026-01-01T00:00:00.000000+0000", "event_type": "triton", "flow_id": 1,
            "src_ip": client, "src_port": 40000, "dest_ip": "10.20.0.5", "dest_port": port, "proto": "TCP",
            "http": {"http_method": "POST", "url": f"/v2/models/{model}/infer", "request_length": size},
            "triton": {"model": model, "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": list(shape)}]}}


def learned(params: BaselineParams | None = None) -> Baseline:
    """Two clients, one call each every 2 s for 300 s."""
    baseline = Baseline(params or BaselineParams(warmup=0))
    baseline.detect = False
    for n in range(150):
        for offset, client in ((0.0, "10.0.0.1"), (1.0, "10.0.0.2")):
            assert baseline.observe(triton(client), T0 + 2 * n + offset) == []
    baseline.detect = True
    return baseline


def kinds(records: list[dict]) -> list[tuple[str, str | None]]:
    return [(r["anomaly"]["kind"], r["anomaly"].get("scope")) for r in records]


def test_robust_ewma_tracks_mean_and_absolute_deviation():
    stats = RobustEwma()
    for x in (10.0, 12.0, 8.0, 10.0):
        stats.update(x, 0.5)
    assert stats.mean == pytest.approx(9.75) and stats.n == 4
    assert stats.dev == pytest.approx(1.25)  # |12-10|, |8-11|, |10-9.5| folded in with weight 0.5
    assert stats.z(20.0, floor=0.1) == pytest.approx((20 - 9.75) / (math.sqrt(math.pi / 2) * 1.25))


def test_rate_counter_fills_empty_intervals_with_zeros():
    counter = RateCounter()
    for ts in (0.0, 1.0, 35.0):  # two events in interval 0, intervals 1 and 2 empty, one in 3
        counter.add(ts, 10.0, 0.5)
    assert counter.history == 3 and counter.count == 1
    assert counter.counts.mean == pytest.approx(0.5)  # 2, then halved twice


def test_novelty_surprise_is_bits_and_the_set_is_bounded():
    known = NoveltySet(cap=2)
    for value in ["a"] * 7:
        known.observe(value)
    assert known.surprise() == pytest.approx(math.log2(8 / 2))
    assert known.observe("b") and known.observe("c") and not known.observe("c")
    assert list(known.values) == ["b", "c"] and known.evicted == 1


def test_subjects_and_shape_patterns():
    assert subject_of(triton("c")) == "triton:resnet"
    assert http_path_subject("GET", "/v1/files/123/content?x=1") == "GET /v1/files/{id}/content"
    assert subject_of({"event_type": "grpc", "grpc": {"service": "pkg.S", "method": "M"}}) == "grpc:pkg.S/M"
    assert shape_patterns(triton("c", shape=(64, 3, 224))) == ["INPUT0|FP32|*,3,224"]


def test_nothing_is_reported_for_the_traffic_learned():
    baseline = learned()
    assert baseline.observe(triton("10.0.0.1"), T0 + 301) == []
    assert baseline.observe(triton("10.0.0.2", shape=(8, 4)), T0 + 302) == []  # batch dimension is free


def test_new_client_new_shape_new_endpoint_scores():
    baseline = learned()
    found = baseline.observe(triton("10.9.9.9"), T0 + 301)
    assert kinds(found) == [("new_client", "10.20.0.5:8000")]
    assert found[0]["anomaly"]["score"] == pytest.approx(math.log2(301 / 3), abs=1e-3)
    assert found[0]["anomaly"]["value"] == "10.9.9.9" and found[0]["src_ip"] == "10.9.9.9"
    assert kinds(baseline.observe(triton("10.0.0.1", shape=(1, 8)), T0 + 302)) == [
        ("new_shape", "10.20.0.5:8000|triton:resnet")]
    assert kinds(baseline.observe(triton("10.0.0.1", model="gpt"), T0 + 303)) == [
        ("new_endpoint", "10.20.0.5:8000")]
    assert baseline.observe(triton("10.9.9.9"), T0 + 304) == []  # reported once, then known


def test_rate_spike_escalates_and_payload_size():
    baseline = learned()
    scores = []
    for n in range(100):
        for record in baseline.observe(triton("10.0.0.1"), T0 + 310 + n * 0.05):
            assert record["anomaly"]["kind"] == "rate_spike"
            scores.append((record["anomaly"]["scope"], record["anomaly"]["score"]))
    client = [s for scope, s in scores if scope == "client"]
    assert len(client) >= 3 and all(b >= 2 * a for a, b in itertools.pairwise(client))
    assert {scope for scope, _ in scores} == {"client", "all_clients", "server"}
    found = baseline.observe(triton("10.0.0.2", size=100_000), T0 + 400)
    assert kinds(found) == [("payload_size", "client")]
    assert found[0]["anomaly"]["observed"] == 100_000 and found[0]["anomaly"]["score"] > 6


def test_online_warmup_reports_nothing_until_it_is_over():
    baseline = Baseline(BaselineParams(warmup=60))
    for n in range(30):
        assert baseline.observe(triton(f"10.0.1.{n % 3}"), T0 + n) == []  # new clients, unreported
    for n in range(20):
        baseline.observe(triton("10.0.0.1"), T0 + 30 + n)
    assert kinds(baseline.observe(triton("10.0.2.2"), T0 + 61)) == [("new_client", "10.20.0.5:8000")]


def test_deterministic_and_the_file_round_trips(tmp_path):
    rng = random.Random(5)
    records = [(triton(f"10.0.0.{rng.randrange(4)}", shape=(1, rng.choice((4, 4, 4, 8))),
                       size=rng.randrange(50, 5000)), T0 + i * rng.random()) for i in range(400)]
    outputs = []
    for _ in range(2):
        baseline = Baseline(BaselineParams(warmup=10))
        outputs.append([a for record, ts in records for a in baseline.observe(record, ts)])
        baseline.save(tmp_path / f"b{len(outputs)}.json")
    assert outputs[0] == outputs[1] and outputs[0]
    assert (tmp_path / "b1.json").read_bytes() == (tmp_path / "b2.json").read_bytes()
    loaded = Baseline.load(tmp_path / "b1.json")
    assert loaded.loaded and loaded.warmed_up and loaded.params == BaselineParams(warmup=10)
    assert json.loads((tmp_path / "b1.json").read_text())["sets"] == loaded.to_json()["sets"]


def test_caps_bound_the_state_and_count_evictions():
    baseline = Baseline(BaselineParams(warmup=0, max_rate_keys=50, max_sets=20, max_clients=8))
    for n in range(500):
        baseline.observe(triton(f"10.1.{n // 250}.{n % 250}", model=f"m{n % 30}", port=8000 + n % 40), T0 + n)
    counters = baseline.counters()
    assert counters["rate_keys"] <= 50 and counters["sets"] <= 20
    assert counters["rate_keys_evicted"] > 0 and counters["sets_evicted"] > 0
    assert all(len(s.values) <= 8 for _, s in baseline.sets if _.startswith("clients|"))


@pytest.mark.parametrize("text, message", [("[]", "not an inspector-baseline"),
                                           ('{"format": "inspector-baseline", "version": 9}', "version 9"),
                                           ('{"format": "inspector-baseline", "version": 1}', "malformed")])
def test_bad_files_are_refused(tmp_path, text, message):
    path = tmp_path / "b.json"
    path.write_text(text)
    with pytest.raises(BaselineError, match=message):
        Baseline.load(path)


def test_a_sustained_burst_stays_an_anomaly():
    """A client that goes from one call per 2 s to 25 per 10 s and stays there (a scrape) is
    reported in every interval of its first minute: outlier intervals update the baseline no more
    than the report threshold would (winsorized), so two of them do not make it normal."""
    baseline = learned()
    reported = set()
    for n in range(60 * 25 // 10):
        ts = T0 + 310 + n * 0.4
        for record in baseline.observe(triton("10.0.0.1"), ts):
            if record["anomaly"]["kind"] == "rate_spike" and record["anomaly"]["scope"] == "client":
                reported.add(math.floor(ts / 10))
    assert len(reported) == 6, sorted(reported)


@pytest.mark.parametrize("overrides, message", [
    ({"interval": 0}, "interval must be > 0"), ({"interval": -5}, "interval must be > 0"),
    ({"interval": math.nan}, "finite"), ({"warmup": -1}, "warmup must not be negative"),
    ({"rate_alpha": 5}, r"rate_alpha must be in \(0, 1\]"), ({"max_sets": 0}, "max_sets must be at least 1"),
])
def test_params_out_of_range_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        BaselineParams(**overrides)


def test_a_file_with_bad_params_or_sections_names_itself(tmp_path):
    good = learned().to_json()
    for name, change in (("zero", {"params": {**good["params"], "interval": 0}}),
                         ("unknown", {"params": {**good["params"], "bogus": 1}}),
                         ("rates", {"rates": "x"})):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(BaselineError, match=rf"{name}\.json: malformed baseline"):
            Baseline.load(path)
