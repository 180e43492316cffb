"""Two `inspector proxy` processes sharing a real redis-server: a rate limit holds across them;
with Redis stopped the fallback engages and traffic keeps flowing."""

from __future__ import annotations

import shutil
import time

import pytest
import tritonclient.grpc as grpcclient
from live_sidecar import Sidecar, write_rule
from test_redis_rate import RedisServer
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")

SID_RATE = 9400001


def test_shared_limit_then_fallback(grpc_upstream, certs, tmp_path):
    port, _ = grpc_upstream
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, SID_RATE, "Liveness probe flood", "grpc", {"grpc.method": "ServerLive"}, action="block",
               rate={"by": ["grpc.method"], "count": 5, "window": "60s"})
    redis = RedisServer(tmp_path).start()
    args = ["--redis", redis.url]
    first = Sidecar(tmp_path, f"h2c://127.0.0.1:{port}", rules, cert=certs.server_cert, key=certs.server_key,
                    args=args, name="first")
    second = Sidecar(tmp_path, f"h2c://127.0.0.1:{port}", rules, cert=certs.server_cert, key=certs.server_key,
                     args=args, name="second")
    with first, second:
        clients = [grpcclient.InferenceServerClient(f"localhost:{proxy.port}", ssl=True,
                                                    root_certificates=str(certs.ca)) for proxy in (first, second)]
        for i in range(4):  # 2 through each: neither sidecar alone is near 5
            assert clients[i % 2].is_server_live()
        for client in clients:  # the 5th and 6th calls overall
            with pytest.raises(InferenceServerException) as raised:
                client.is_server_live()
            assert raised.value.status() == "StatusCode.PERMISSION_DENIED"
        assert len(first.alerts(SID_RATE)) + len(second.alerts(SID_RATE)) == 1  # one alert per window
        assert first.health()["ratelimit_backend"] == "redis"

        redis.stop()
        started = time.monotonic()
        for _ in range(4):  # in-process windows now: each sidecar counts from zero
            assert clients[0].is_server_live()
        assert time.monotonic() - started < 2.0  # short timeouts, then no Redis calls until the retry time
        assert first.metric("inspector_ratelimit_backend_errors_total") >= 1
        assert first.metric("inspector_ratelimit_backend_up") == 0
        assert first.health()["ratelimit_backend"] == "memory-fallback"
        assert "failed" in first.log_text() and "in-process windows" in first.log_text()
        for client in clients:
            client.close()
