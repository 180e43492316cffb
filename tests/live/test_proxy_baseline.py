"""`inspector proxy --baseline ... --baseline-save FILE`: the baseline, with what the sidecar
learned from its traffic, is written (0600, atomically) on SIGHUP and at shutdown, and the next run
goes on from it; an online baseline still in its warm-up is not written."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
from pathlib import Path

from live_sidecar import ROOT, Sidecar, wait_for

from inspector.anomaly.baseline import Baseline

LAB_BASELINE = ROOT / "pcaps" / "lab" / "baseline.json"
BODY = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
                              {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16}]}).encode()


def _infer(sidecar: Sidecar, count: int) -> None:
    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", sidecar.port, timeout=10)
        connection.request("POST", "/v2/models/simple/infer", BODY, {"Content-Type": "application/json"})
        assert connection.getresponse().status == 200
        connection.close()


def test_the_learned_baseline_is_saved_on_sighup_and_at_shutdown(rest_upstream, tmp_path):
    saved = tmp_path / "learned.json"
    start = Baseline.load(LAB_BASELINE).records
    sidecar = Sidecar(tmp_path, f"http://127.0.0.1:{rest_upstream.server_address[1]}", [],
                      args=["--baseline", str(LAB_BASELINE), "--baseline-save", str(saved)])
    with sidecar:
        _infer(sidecar, 5)
        wait_for(lambda: len([r for r in sidecar.records() if r["event_type"] == "triton"]) == 5)
        sidecar.signal(signal.SIGHUP)
        wait_for(saved.exists)
        assert saved.stat().st_mode & 0o777 == 0o600
        assert Baseline.load(saved).records == start + 5
        _infer(sidecar, 3)
        wait_for(lambda: len([r for r in sidecar.records() if r["event_type"] == "triton"]) == 8)
    assert sidecar.process is not None and sidecar.process.returncode == 0
    assert Baseline.load(saved).records == start + 8  # written again at shutdown
    assert not list(tmp_path.glob(".learned.json.*"))  # no temporary file left behind

    # the next run goes on from it
    again = Sidecar(tmp_path, f"http://127.0.0.1:{rest_upstream.server_address[1]}", [],
                    args=["--baseline", str(saved), "--baseline-save", str(saved)], name="again")
    with again:
        _infer(again, 2)
        wait_for(lambda: len([r for r in again.records() if r["event_type"] == "triton"]) == 2)
    assert Baseline.load(saved).records == start + 10


def test_an_online_baseline_in_its_warm_up_is_not_saved(rest_upstream, tmp_path):
    saved = tmp_path / "online.json"
    sidecar = Sidecar(tmp_path, f"http://127.0.0.1:{rest_upstream.server_address[1]}", [],
                      args=["--baseline", "online", "--baseline-save", str(saved)])
    with sidecar:
        _infer(sidecar, 2)
        wait_for(lambda: len([r for r in sidecar.records() if r["event_type"] == "triton"]) == 2)
    assert not saved.exists()
    assert "still in its warm-up" in sidecar.log_text()


def test_baseline_save_needs_a_baseline(tmp_path):
    done = subprocess.run([sys.executable, "-m", "inspector.cli", "proxy", "--upstream", "http://127.0.0.1:9",
                           "--listen", "127.0.0.1:0", "--eve", str(tmp_path / "eve.json"), "--metrics", "off",
                           "--baseline-save", str(tmp_path / "b.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "inspector_baseline_save needs inspector_baseline" in done.stdout + done.stderr
    assert not Path(tmp_path / "b.json").exists()
