"""Test-only fault injection for the live sidecar, loaded beside the inspector addon with
`inspector proxy --set scripts=tests/robustness/fault_addon.py`.

It makes our own code raise, the way a parser or rule bug would: a request whose URL contains
`/fault/parser` makes an extra HTTP layer raise inside `transaction_record`, one containing
`/fault/rule` makes the engine raise while evaluating. Nothing in the product knows about it.
"""

from __future__ import annotations

import inspector.apps as apps
from inspector.engine import Engine


class InjectedFault(RuntimeError):
    pass


def _faulty_layer(ctx):
    request = ctx.exchange.request
    if request is not None and "/fault/parser" in request.path:
        raise InjectedFault("injected parser fault")
    return None


if not any(entry[0] == "faultinject" for entry in apps.HTTP_LAYERS):
    apps.HTTP_LAYERS.append(("faultinject", _faulty_layer, frozenset({"http"})))
    _evaluate = Engine.evaluate

    def evaluate(self, record, ts, skip=frozenset(), **options):
        if "/fault/rule" in str((record.get("http") or {}).get("url", "")):
            raise InjectedFault("injected rule fault")
        return _evaluate(self, record, ts, skip, **options)

    Engine.evaluate = evaluate
