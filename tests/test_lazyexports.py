"""Packages whose public names are imported on first use (inspector.lazyexports), in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_policy_and_anomaly_load_their_api_when_first_asked_for_it() -> None:
    code = (
        "import json, sys\n"
        "import inspector.policy.fields, inspector.anomaly.fields\n"
        "seen = lambda: sorted(m for m in sys.modules if m.startswith(('inspector.policy.', 'inspector.anomaly.')))\n"
        "before = seen()\n"
        "from inspector.policy import PolicyMonitor, load_policy\n"
        "import inspector.anomaly as anomaly\n"
        "kinds = anomaly.KINDS\n"
        "missing = hasattr(anomaly, 'NoSuchName')\n"
        "print(json.dumps({'before': before, 'after': seen(), 'kinds': list(kinds), 'missing': missing,\n"
        "                  'kept': 'KINDS' in vars(anomaly), 'monitor': PolicyMonitor.__module__,\n"
        "                  'policy': type(load_policy('pcaps/lab/policy.yaml')).__name__}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["before"] == ["inspector.anomaly.fields", "inspector.policy.fields"]
    assert {"inspector.policy.loader", "inspector.policy.monitor", "inspector.anomaly.baseline"} <= set(result["after"])
    assert "rate_spike" in result["kinds"] and result["kept"]
    assert result["missing"] is False  # an unknown name is an AttributeError, as on any module
    assert result["monitor"] == "inspector.policy.monitor" and result["policy"] == "Policy"
