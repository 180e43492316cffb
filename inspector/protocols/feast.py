"""The `feast` layer: placeholder until its parser lands (ML-protocol parsers issue).

Implements the layer interface of inspector.apps and claims nothing yet.
"""

from __future__ import annotations

from typing import Any

LAYER = "feast"


def build(ctx: Any) -> dict[str, Any] | None:
    return None
