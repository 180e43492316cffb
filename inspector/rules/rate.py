"""Rate rules: count a rule's matches per key in a sliding time window.

A rule with ``rate: {by: [src_ip, triton.model], count: 100, window: 60s}`` alerts on the
100th matching event that falls within any 60-second span for the same key (the values of the
`by` fields; a missing field is a null part of the key). After an alert the same key stays
quiet until `window` has passed since that alert; then the next event for which the last
`count` events again span less than `window` alerts. A sustained flood therefore alerts about
once per window, a burst of `count` events alerts once.

Compared with Suricata:

* `threshold: type threshold` alerts on every Nth match (it restarts counting) - we alert once
  per window however many matches.
* `threshold: type both` (alert once per period when the count is reached) is the closest
  equivalent, but its period tumbles: it starts at the first match and restarts at the first
  match after it expired. Matches straddling a restart are split between two periods, so up to
  2 x count - 2 of them in a few seconds can pass without an alert. Clock-aligned fixed windows
  (Envoy's ratelimit) have the same gap, and alert twice for two bursts either side of a
  boundary. Our window slides over exact event timestamps (the last `count` per key), so
  neither happens.
* `detection_filter` alerts on every match after the count is reached. We log one alert per
  window; in blocking mode a `block` rate rule still blocks every event over the threshold
  (`RateResult.ABOVE`), without writing an alert for each.

Time is the event's timestamp (capture time offline, wall clock live), never the engine's
clock, so replaying a capture gives the same alerts at any speed. Events that arrive out of
order are placed by timestamp.

Storage hides behind :class:`RateStore` so a shared backend (Redis, for several sidecars) can
keep identical semantics. :class:`MemoryRateStore` keeps at most `max_keys` keys, least
recently used evicted first and counted.
"""

from __future__ import annotations

import bisect
import enum
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smh]?)\Z")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}
MAX_WINDOW_SECONDS = 7 * 24 * 3600
MAX_COUNT = 1_000_000


class RateResult(enum.Enum):
    BELOW = "below"  # fewer than count events within the window: nothing to do
    ALERT = "alert"  # the threshold is reached and no alert for this key within the window: alert
    ABOVE = "above"  # over the threshold, already alerted within the window: quiet (still blocks)


class RateStore(Protocol):
    """Per-key sliding windows. Implementations must give the same results as MemoryRateStore."""

    evicted: int

    def hit(self, key: Hashable, ts: float, window: float, count: int) -> RateResult:
        """Record one event at `ts` for `key` and say where the key stands."""
        ...

    def __len__(self) -> int: ...


class MemoryRateStore:
    """In-process store: the last `count` timestamps per key, keys in LRU order, capped."""

    __slots__ = ("_slots", "evicted", "max_keys")

    def __init__(self, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        self.max_keys = max_keys
        self.evicted = 0
        # key -> [deque of the newest `count` timestamps (sorted), time of the last alert or None]
        self._slots: OrderedDict[Hashable, list[Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._slots)

    def hit(self, key: Hashable, ts: float, window: float, count: int) -> RateResult:
        slots = self._slots
        slot = slots.get(key)
        if slot is None:
            if len(slots) >= self.max_keys:
                slots.popitem(last=False)
                self.evicted += 1
            slot = [deque(maxlen=count), None]
            slots[key] = slot
        else:
            slots.move_to_end(key)
        times: deque[float] = slot[0]
        if not times or ts >= times[-1]:
            times.append(ts)  # the usual case; maxlen drops the oldest
        elif len(times) < count:
            bisect.insort(times, ts)
        elif ts > times[0]:
            times.popleft()
            bisect.insort(times, ts)
        # else: older than every kept timestamp, so outside the newest `count`: no effect.
        if len(times) < count or times[-1] - times[0] >= window:
            return RateResult.BELOW
        last_alert = slot[1]
        if last_alert is not None and ts - last_alert < window:
            return RateResult.ABOVE
        slot[1] = ts
        return RateResult.ALERT


def parse_window(value: Any) -> float:
    """`60s`, `5m`, `1h`, `90` or `1.5s` -> seconds. Raises ValueError with the reason."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"window must be a duration like 60s, 5m, 1h, got {value!r}")
    if isinstance(value, str):
        match = _DURATION.match(value.strip())
        if match is None:
            raise ValueError(f"window {value!r} is not a duration like 60s, 5m, 1h (or seconds)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        seconds = float(value)
    if not seconds > 0:
        raise ValueError(f"window must be positive, got {value!r}")
    if seconds > MAX_WINDOW_SECONDS:
        raise ValueError(f"window {value!r} is longer than 7 days")
    return seconds


def format_window(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True, kw_only=True)
class RateSpec:
    """A rule's `rate:` block, compiled."""

    by: tuple[str, ...]
    count: int
    window: float
    getters: tuple[Callable[[dict], Any], ...] = field(repr=False, compare=False)

    def key_values(self, record: dict) -> tuple[Any, ...]:
        """The `by` values of a record, hashable (lists become tuples; missing is None)."""
        return tuple(_hashable(get(record)) for get in self.getters)

    def describe(self) -> str:
        by = f" by {', '.join(self.by)}" if self.by else ""
        return f"{self.count} in {format_window(self.window)}{by}"


def _hashable(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted(((k, _hashable(v)) for k, v in value.items()), key=lambda kv: repr(kv[0])))
    return value
