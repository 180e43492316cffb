"""RedisRateStore against a real redis-server: the same answers as MemoryRateStore for the same
event sequences, atomic across clients, keys that expire, and a fallback when Redis goes away."""

from __future__ import annotations

import random
import shutil
import subprocess
import time

import pytest
from live_sidecar import free_port, wait_for

from inspector.live.redis_rate import RedisRateStore, key_digest
from inspector.rules.rate import MemoryRateStore, RateResult

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


class RedisServer:
    def __init__(self, tmp_path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port, socket_timeout=0.5)
        wait_for(lambda: _ping(client), timeout=10)
        client.close()
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def _ping(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """Seeds 0-11 cover the three answers (below, alert, above) on every key shape."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def _sequence(rng: random.Random, events: int) -> list[tuple[tuple, float]]:
    """Events on a few keys, mostly in order, some late (out of order), some simultaneous."""
    keys = [(9000001, "10.0.0.1"), (9000001, "10.0.0.2"), (9000002, None), (9000003, ("a", 1))]
    ts = 1_700_000_000.0
    out = []
    for _ in range(events):
        roll = rng.random()
        if roll < 0.1:
            at = ts - rng.uniform(0, 5)  # late
        elif roll < 0.2:
            at = ts  # same instant
        else:
            ts += rng.expovariate(4.0)
            at = ts
        out.append((rng.choice(keys), at))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_same_answers_as_memory_store(redis_server, seed):
    rng = random.Random(seed)
    window = rng.choice([0.5, 1.0, 2.5, 10.0])
    count = rng.choice([1, 2, 3, 5, 8])
    store = RedisRateStore(redis_server.url, prefix=f"test:{seed}:{time.monotonic_ns()}:", timeout=1.0)
    memory = MemoryRateStore()
    for key, ts in _sequence(rng, 300):
        expected = memory.hit(key, ts, window, count)
        assert store.hit(key, ts, window, count) is expected, (key, ts, window, count)
    assert store.errors == 0 and store.fallback_hits == 0
    store.close()


def test_shared_between_two_clients(redis_server):
    """Two sidecars' stores on one key: the count-th event overall alerts, once."""
    prefix = f"shared:{time.monotonic_ns()}:"
    a = RedisRateStore(redis_server.url, prefix=prefix)
    b = RedisRateStore(redis_server.url, prefix=prefix)
    key = (9000001, "10.0.0.9")
    results = [(a if i % 2 else b).hit(key, 100.0 + i * 0.01, 60.0, 5) for i in range(8)]
    assert results == [RateResult.BELOW] * 4 + [RateResult.ALERT] + [RateResult.ABOVE] * 3
    a.close()
    b.close()


def test_keys_expire_by_themselves(redis_server):
    import redis

    prefix = f"ttl:{time.monotonic_ns()}:"
    store = RedisRateStore(redis_server.url, prefix=prefix)
    key = (9000005, "x")
    store.hit(key, 10.0, 1.0, 1)  # alerts: both keys exist
    client = redis.Redis(port=redis_server.port)
    digest = key_digest(key)
    ttls = [client.pttl(f"{prefix}{{{digest}}}:{suffix}") for suffix in ("t", "a")]
    assert all(0 < ttl <= 6000 for ttl in ttls), ttls  # window 1 s + 5 s margin
    client.close()
    store.close()


def test_unreachable_redis_falls_back_without_hanging(tmp_path):
    errors = []
    states = []
    store = RedisRateStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.05, retry_interval=30.0,
                           on_error=errors.append, on_state=states.append)
    started = time.monotonic()
    results = [store.hit(("k",), 1.0 + i, 60.0, 3) for i in range(5)]
    elapsed = time.monotonic() - started
    assert results == [RateResult.BELOW, RateResult.BELOW, RateResult.ALERT, RateResult.ABOVE, RateResult.ABOVE]
    assert len(errors) == 1 and states == [False]  # one failure, then the fallback until the retry time
    assert store.fallback_hits == 5 and not store.up
    assert elapsed < 1.0


def test_redis_stopped_then_back(tmp_path):
    server = RedisServer(tmp_path).start()
    states = []
    store = RedisRateStore(server.url, timeout=0.05, retry_interval=0.2, on_state=states.append)
    assert store.hit(("k",), 1.0, 60.0, 100) is RateResult.BELOW and store.up
    server.stop()
    assert store.hit(("k",), 2.0, 60.0, 100) is RateResult.BELOW
    assert not store.up and states == [False]
    server.start()
    time.sleep(0.25)
    assert store.hit(("k",), 3.0, 60.0, 100) is RateResult.BELOW
    assert store.up and states == [False, True]
    server.stop()
    store.close()
