"""inspector/live/gcfreeze.py, in a fresh interpreter each (freezing is process-wide): what is
loaded when the proxy starts leaves the collector's oldest generation, and a reload's refreeze
collects the replaced objects' cycles instead of keeping them frozen."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO, check=True)
    return done.stdout.strip()


def test_freeze_takes_the_loaded_objects_out_of_full_collections_and_thaw_gives_them_back():
    out = _run("""
        import gc
        from inspector.live import gcfreeze
        from inspector.rules import load_config, load_rules
        from inspector.engine import Engine
        config = load_config(None)
        engine = Engine(load_rules(["signatures"], config), config)  # what a sidecar loads
        gc.collect()
        before = len(gc.get_objects(generation=2))
        frozen = gcfreeze.freeze()
        after = len(gc.get_objects(generation=2))
        gcfreeze.thaw()
        print(before, frozen, after, gc.get_freeze_count(), len(gc.get_objects(generation=2)) >= before)
    """)
    before, frozen, after, thawed, back = out.split()
    assert int(before) > 20_000 and int(frozen) >= int(before)
    assert int(after) < 1_000  # a full collection now walks next to nothing
    assert (thawed, back) == ("0", "True")


def test_refreeze_collects_what_was_replaced_while_frozen():
    out = _run("""
        import gc, weakref
        from inspector.live import gcfreeze
        class RuleSet:
            pass
        old = RuleSet()
        old.self = old  # a cycle: only the collector frees it
        gone = weakref.ref(old)
        gcfreeze.freeze()
        del old  # replaced by a reload
        gc.collect()
        kept_frozen = gone() is not None
        gcfreeze.refreeze()
        print(kept_frozen, gone() is None, gc.get_freeze_count() > 0)
    """)
    assert out == "True True True"
