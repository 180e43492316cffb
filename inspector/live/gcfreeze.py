"""The proxy's start-up objects kept out of the garbage collector's full collections.

A running sidecar holds about 100,000 objects from start-up that live as long as it does:
mitmproxy and its addons, the rule set and its compiled matchers, the modules. CPython's full
collection (the oldest generation) walks every one of them each time it runs, and every request
in flight waits it out: measured here, 17-47 ms per full collection, six of them in a
16-second gRPC benchmark, where the p99 of 8 clients' calls was 61 ms against 25-28 ms for
plain mitmdump (benchmarks/README.md, "Full collections"). `gc.freeze()` moves the objects that
exist into a permanent generation the collector leaves alone (as `inspector analyze` does
before its run): full collections then walk what requests leave behind, 5 ms at most in the
same benchmark.

`freeze()` collects what start-up left as garbage, then freezes the rest. `thaw()` gives the
frozen objects back to the collector. After a rule reload, `refreeze()` does both, with a
collection between, so cycles of the rule set that was replaced are collected rather than kept
in the permanent generation for good.
"""

from __future__ import annotations

import gc


def freeze() -> int:
    """Collect, then freeze every object the collector tracks; returns how many are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def thaw() -> None:
    """The frozen objects back to the collector's oldest generation."""
    gc.unfreeze()


def refreeze() -> int:
    """After objects were replaced (a rule reload): thaw, collect, freeze again."""
    thaw()
    return freeze()
