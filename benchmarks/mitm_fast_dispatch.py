"""mitmproxy addon for bench_live.py's third contender: plain mitmdump with the sidecar's hook
dispatch (inspector.live.hookdispatch) and nothing else, so the benchmark can tell the
inspection's own cost (inspector proxy against this) from the dispatch's saving (this against
plain mitmdump).

    mitmdump -s benchmarks/mitm_fast_dispatch.py --mode reverse:http://127.0.0.1:8000@9000
"""

from __future__ import annotations

from typing import Any

from mitmproxy import ctx

from inspector.live.hookdispatch import set_fast_dispatch


class FastDispatch:
    def running(self) -> Any:
        set_fast_dispatch(ctx.master)


addons = [FastDispatch()]
