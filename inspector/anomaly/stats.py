"""The statistics of the baseline: robust EWMA scores, interval rate counters, novelty sets.

Pure arithmetic on numbers handed in, no clock: time is the record's timestamp, so a capture
scores the same on any machine. The maths is written out in docs/anomaly.md; in short:

* :class:`RobustEwma` keeps an exponentially weighted mean `m` and an exponentially weighted
  mean absolute deviation `d` of a series. The score of a new value `x` is the robust z-score
  `(x - m) / max(1.2533 * d, floor)` (1.2533 = sqrt(pi/2) turns a mean absolute deviation into
  a standard deviation for normal data; the floor keeps a perfectly steady series from making
  every small change infinitely surprising).
* :class:`RateCounter` counts events in fixed intervals of `interval` seconds; every closed
  interval (empty ones included, as zeros) updates a RobustEwma of the counts, and the count of
  the interval in progress is scored against it as it grows, with a Poisson floor
  `sqrt(max(m, 1))` (counts of independent arrivals vary at least that much).
* :class:`NoveltySet` remembers the distinct values of something (clients of a server, shapes of
  a model); a value never seen scores `log2((n + 1) / (k + 1))` bits, where `n` is how many
  observations the set has had and `k` how many distinct values: the estimated probability that
  the next observation is new is `(k + 1) / (n + 1)`, and the score is its surprise.

Every structure is bounded: sets and key tables evict their least recently seen entry (an
OrderedDict moved to the end on use), and count what they evicted.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: sqrt(pi / 2): standard deviation / mean absolute deviation of a normal distribution.
MAD_TO_SIGMA = math.sqrt(math.pi / 2)
#: Empty intervals applied one by one to a rate before the rest are skipped (the mean and the
#: deviation are then within (1 - alpha)^cap of zero: nothing left to decay).
MAX_GAP_INTERVALS = 256

def _round(value: float) -> float:
    """Floats in the baseline file: 6 significant decimals, so files diff and reload exactly."""
    return float(f"{value:.6g}")


@dataclass(slots=True)
class RobustEwma:
    """EWMA mean and EWMA mean absolute deviation of a series, with the number of samples."""

    mean: float = 0.0
    dev: float = 0.0
    n: int = 0

    def update(self, x: float, alpha: float) -> None:
        if self.n == 0:
            self.mean, self.dev = x, 0.0
        else:
            deviation = abs(x - self.mean)
            self.mean += alpha * (x - self.mean)
            self.dev += alpha * (deviation - self.dev)
        self.n += 1

    def sigma(self, floor: float) -> float:
        return max(MAD_TO_SIGMA * self.dev, floor)

    def z(self, x: float, floor: float) -> float:
        return (x - self.mean) / self.sigma(floor)

    def to_json(self) -> list[Any]:
        return [_round(self.mean), _round(self.dev), self.n]

    @classmethod
    def from_json(cls, value: Any) -> RobustEwma:
        mean, dev, n = value
        return cls(float(mean), float(dev), int(n))


@dataclass(frozen=True, slots=True)
class OutlierGuard:
    """Keeps outliers out of a baseline: a sample `z` sigmas or more above the mean, once
    `min_samples` are known, is not learned, so a sustained burst stays an anomaly instead of
    becoming normal after two intervals; `relearn_after` such samples in a row are a new level,
    learned from then on (a scrape that lasts is reported for that long, then accepted)."""

    z: float
    min_samples: int
    relearn_after: int

    def learn(self, state: Any, z: float, samples: int) -> bool:
        """Whether the sample goes into the baseline; counts the outliers in a row on `state`."""
        if samples < self.min_samples or z < self.z or state.outliers_in_a_row >= self.relearn_after:
            state.outliers_in_a_row = 0
            return True
        state.outliers_in_a_row += 1
        return False


@dataclass(slots=True)
class RateCounter:
    """Counts per interval, and the RobustEwma of the closed intervals' counts."""

    interval_index: int = -1
    count: int = 0
    reported: int = -1  # the interval a spike was last reported in
    counts: RobustEwma | None = None
    reported_score: float = 0.0  # the score last reported in that interval
    outliers_in_a_row: int = 0  # closed intervals not learned, one after the other (OutlierGuard)

    def add(self, ts: float, interval: float, alpha: float, guard: OutlierGuard | None = None) -> None:
        """One event at `ts`: close the intervals that ended since the last one, then count it.
        With a `guard`, a closed interval it calls an outlier is not learned."""
        index = math.floor(ts / interval)
        counts = self.counts
        if counts is None:
            counts = self.counts = RobustEwma()
        if self.interval_index < 0:
            self.interval_index = index
        elif index > self.interval_index:
            if guard is None or guard.learn(self, self.score(), counts.n):  # the closed interval's score
                counts.update(float(self.count), alpha)
            gap = min(index - self.interval_index - 1, MAX_GAP_INTERVALS)
            for _ in range(gap):
                counts.update(0.0, alpha)
            self.interval_index, self.count = index, 0
        # An event older than the interval in progress (out-of-order records): counted in it.
        self.count += 1

    def score(self) -> float:
        counts = self.counts
        assert counts is not None
        return counts.z(float(self.count), math.sqrt(max(counts.mean, 1.0)))

    @property
    def history(self) -> int:
        return self.counts.n if self.counts is not None else 0

    def to_json(self) -> dict[str, Any]:
        return {"interval": self.interval_index, "count": self.count,
                "counts": self.counts.to_json() if self.counts is not None else None}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RateCounter:
        """A counter resumed from a saved baseline: its interval statistics, not its clock (the
        time between learning and now is not a run of empty intervals: the next event starts a
        new interval)."""
        counts = value.get("counts")
        return cls(-1, 0, -1, RobustEwma.from_json(counts) if counts is not None else None)


class NoveltySet:
    """Distinct values seen (least recently seen evicted past `cap`) and observations made."""

    __slots__ = ("cap", "evicted", "observations", "values")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.values: OrderedDict[str, None] = OrderedDict()
        self.observations = 0
        self.evicted = 0

    def surprise(self) -> float:
        """Bits of surprise of a value not in the set, given what the set has seen so far."""
        return math.log2((self.observations + 1) / (len(self.values) + 1))

    def observe(self, value: str) -> bool:
        """Record one observation; True when the value was new."""
        self.observations += 1
        values = self.values
        if value in values:
            values.move_to_end(value)
            return False
        values[value] = None
        if len(values) > self.cap:
            values.popitem(last=False)
            self.evicted += 1
        return True

    def to_json(self) -> dict[str, Any]:
        return {"n": self.observations, "values": list(self.values)}

    @classmethod
    def from_json(cls, value: dict[str, Any], cap: int) -> NoveltySet:
        out = cls(cap)
        out.observations = int(value["n"])
        for item in value["values"][-cap:]:
            out.values[str(item)] = None
        return out


class BoundedTable[V]:
    """A key -> state table keeping the `cap` most recently used keys."""

    __slots__ = ("cap", "evicted", "items")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: OrderedDict[str, V] = OrderedDict()
        self.evicted = 0

    def get(self, key: str) -> V | None:
        item = self.items.get(key)
        if item is not None:
            self.items.move_to_end(key)
        return item

    def put(self, key: str, value: V) -> V:
        self.items[key] = value
        self.items.move_to_end(key)
        if len(self.items) > self.cap:
            self.items.popitem(last=False)
            self.evicted += 1
        return value

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[tuple[str, V]]:
        return iter(self.items.items())
