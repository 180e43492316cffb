"""mitmproxy addon for bench_live.py's third contender: plain mitmdump with the sidecar's tuning
of mitmproxy and nothing else: its hook dispatch (inspector/live/hookdispatch.py), its 256 KiB
reads (readsize.py), glibc's malloc thresholds (malloctune.py) and its start-up objects frozen
out of the collector's full collections (gcfreeze.py). The benchmark can then tell
the inspection's own cost (inspector proxy against this) from what the tuning saves (this
against plain mitmdump).

    mitmdump -s benchmarks/mitm_tuned.py --mode reverse:http://127.0.0.1:8000@9000
"""

from __future__ import annotations

from typing import Any

from mitmproxy import ctx

from inspector.live import gcfreeze, options
from inspector.live.hookdispatch import set_fast_dispatch
from inspector.live.malloctune import tune_malloc
from inspector.live.readsize import set_read_size


class TuneMitmproxy:
    def running(self) -> Any:
        set_fast_dispatch(ctx.master)
        set_read_size(options.DEFAULT_READ_SIZE)
        tune_malloc()
        gcfreeze.freeze()


addons = [TuneMitmproxy()]
