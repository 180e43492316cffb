"""Sliding rate windows: threshold ladder, boundaries, once per window, out of order, LRU bound."""

from __future__ import annotations

import pytest

from inspector.rules.rate import MemoryRateStore, RateResult, format_window, parse_window

ALERT, ABOVE, BELOW = RateResult.ALERT, RateResult.ABOVE, RateResult.BELOW

#: One shared sequence of events for one key: a burst of 5 within 4 s, then a straggler 30 s later.
SEQUENCE = [100.0, 101.0, 102.0, 103.0, 104.0, 134.0]


def alerts_for(count: int, window: float, times=SEQUENCE) -> list[float]:
    store = MemoryRateStore()
    return [ts for ts in times if store.hit("key", ts, window, count) is ALERT]


@pytest.mark.parametrize(("count", "window", "expected"), [
    (1, 60, [100.0]),  # count 1: at most one alert per window
    (2, 60, [101.0]),
    (3, 60, [102.0]),
    (4, 60, [103.0]),
    (5, 60, [104.0]),
    (6, 60, [134.0]),  # the straggler is the 6th event within 60 s of the first
    (7, 60, []),  # the rung that must stay silent
    (5, 4.0, []),  # 5 events spanning exactly 4 s do not fit in a 4 s window (span < window)
    (5, 4.001, [104.0]),
    (3, 1.5, []),  # never 3 events within 1.5 s
    (2, 1.5, [101.0, 103.0]),  # once per window: 102 is within 1.5 s of the alert at 101
    (1, 10, [100.0, 134.0]),
])
def test_threshold_ladder(count, window, expected):
    assert alerts_for(count, window) == expected


def test_states_after_alert():
    store = MemoryRateStore()
    results = [store.hit("k", ts, 10.0, 3) for ts in (0.0, 1.0, 2.0, 3.0, 9.0, 12.5, 13.0, 30.0, 31.0, 32.0)]
    assert results == [BELOW, BELOW, ALERT, ABOVE, ABOVE, ALERT, ABOVE, BELOW, BELOW, ALERT]


def test_no_burst_past_a_fixed_window_boundary():
    """count-1 events just before a minute boundary and count-1 just after: one sliding window."""
    count, window = 10, 60.0
    before = [59.0 + i * 0.05 for i in range(count - 1)]
    after = [60.0 + i * 0.05 for i in range(count - 1)]
    assert alerts_for(count, window, before + after) == [60.0]


def test_no_double_alert_across_a_fixed_window_boundary():
    """A full burst either side of a minute boundary is one episode: one alert, not two."""
    count, window = 10, 60.0
    bursts = [58.0 + i * 0.1 for i in range(count)] + [61.0 + i * 0.1 for i in range(count)]
    assert alerts_for(count, window, bursts) == [58.0 + 0.1 * (count - 1)]


def test_sustained_flood_alerts_about_once_per_window():
    times = [i * 0.5 for i in range(600)]  # 2 events/s for 300 s
    assert alerts_for(5, 60.0, times) == [2.0, 62.0, 122.0, 182.0, 242.0]


def test_keys_are_independent():
    store = MemoryRateStore()
    assert [store.hit(k, 1.0, 10, 2) for k in ("a", "b", "a", "b")] == [BELOW, BELOW, ALERT, ALERT]


def test_out_of_order_events_are_placed_by_time():
    store = MemoryRateStore()
    assert [store.hit("k", ts, 10.0, 3) for ts in (20.0, 5.0, 19.0)] == [BELOW, BELOW, BELOW]  # 5..20 > 10 s
    assert store.hit("k", 18.0, 10.0, 3) is ALERT  # newest three: 18, 19, 20
    store = MemoryRateStore()
    assert [store.hit("k", ts, 10.0, 2) for ts in (50.0, 51.0, 10.0)] == [BELOW, ALERT, ABOVE]


def test_lru_eviction_is_bounded_and_counted():
    store = MemoryRateStore(max_keys=3)
    for key in ("a", "b", "c"):
        store.hit(key, 0.0, 60, 2)
    store.hit("a", 1.0, 60, 2)  # a is now the most recent
    store.hit("d", 2.0, 60, 2)  # evicts b, the least recently used
    assert (len(store), store.evicted) == (3, 1)
    assert store.hit("a", 3.0, 60, 2) is ABOVE  # a kept its window (alerted at 1.0)
    assert store.hit("b", 4.0, 60, 2) is BELOW  # b starts over
    assert (len(store), store.evicted) == (3, 2)
    for i in range(100):
        store.hit(("k", i), 5.0, 60, 2)
    assert (len(store), store.evicted) == (3, 102)


def test_max_keys_must_be_positive():
    with pytest.raises(ValueError):
        MemoryRateStore(max_keys=0)


@pytest.mark.parametrize(("text", "seconds"), [
    ("60s", 60), ("5m", 300), ("1h", 3600), (90, 90), ("90", 90), ("1.5s", 1.5), (" 2m ", 120), (0.25, 0.25),
])
def test_parse_window(text, seconds):
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "5d", "-5s", "1e3", "0", 0, True, None, [60], "8h" * 2, "169h"])
def test_parse_window_rejects(text):
    with pytest.raises(ValueError):
        parse_window(text)


def test_format_window():
    assert [format_window(s) for s in (60, 300, 3600, 90, 1.5, 7200)] == ["1m", "5m", "1h", "90s", "1.5s", "2h"]
