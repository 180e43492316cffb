"""`inspector eval`: the shipped pack scored against the lab's ground truth, a before/after comparison,
false positives that count, and the Markdown / HTML / JSON report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "pcaps" / "lab"
EXTRACTION_RULE_SID = 3100003


def _eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inspector.cli", "eval", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def _lab_args() -> list[str]:
    return ["--config", str(LAB / "site.yaml"), "--policy", str(LAB / "policy.yaml")]


@pytest.fixture(scope="module")
def comparison(tmp_path_factory) -> tuple[Path, dict]:
    """The shipped pack against a copy without the model-extraction rate rule and with a noisy rule."""
    work = tmp_path_factory.mktemp("eval")
    tuned = work / "tuned"
    shutil.copytree(REPO / "signatures", tuned)
    removed = [p for p in tuned.rglob("*.yml") if f"sid: {EXTRACTION_RULE_SID}\n" in p.read_text()]
    assert len(removed) == 1
    removed[0].unlink()
    (tuned / "noisy.yml").write_text(
        "title: Any TorchServe registration\nid: 0b6f1f1e-8d8e-4a4e-9d6c-4f0a3d1f7e01\nsid: 9990001\nrev: 1\n"
        "status: experimental\nlevel: low\ndescription: every model registration, benign or not\n"
        "event: torchserve\ndetection:\n  sel:\n    torchserve.api: register_model\n  condition: sel\n")
    out = work / "report"
    done = _eval(str(LAB / "mixed.pcap"), *_lab_args(), "--compare-rules", str(tuned), "--name", "shipped",
                 "--compare-name", "tuned", "-o", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    return out, json.loads((out / "report.json").read_text())


def test_shipped_pack_detects_every_expected_step_of_the_mixed_lab_without_false_positives(comparison):
    _, report = comparison
    shipped = report["evaluations"][0]["overall"]
    assert shipped["fired_pairs"] == shipped["expected_pairs"] > 50
    assert shipped["fp"] == 0 and shipped["unmatched"] == 0
    assert shipped["scenarios_detected"] == shipped["scenarios"] >= 12
    # Every labelled transaction has its EVE record, of the event type the truth names.
    assert shipped["truth_transactions_seen"] == shipped["truth_transactions"]
    assert shipped["truth_transactions_other_type"] == 0
    assert shipped["benign_transactions"] > 50


def test_comparison_shows_the_lost_detection_and_the_new_false_positives(comparison):
    out, report = comparison
    before, after = (e["overall"] for e in report["evaluations"])
    assert after["fired_pairs"] == before["fired_pairs"] - 1
    assert after["fp"] > 0 and after["precision"] < 1.0 and after["benign_alerted"] > 0
    rules = {r["sid"]: r for r in report["evaluations"][1]["rules_scored"]}
    assert rules[EXTRACTION_RULE_SID]["loaded"] is False and rules[EXTRACTION_RULE_SID]["fn"] == 1
    assert rules[9990001]["fp"] == after["fp"] and rules[9990001]["tp"] > 0  # ShellTorch registrations too
    scenario = {s["name"]: s for s in report["evaluations"][1]["scenarios"]}["model-extraction-rate"]
    assert scenario["steps"][0]["missed"] == [EXTRACTION_RULE_SID]
    markdown = (out / "report.md").read_text()
    assert "Detections lost: model-extraction-rate/query-flood by sid 3100003" in markdown
    assert "| shipped | tuned |" in markdown
    assert "### False positives (after)" in markdown and "9990001" in markdown


def test_html_report_is_self_contained_with_charts(comparison):
    out, _ = comparison
    html = (out / "report.html").read_text()
    assert html.lower().startswith("<!doctype html>")
    assert html.count('src="data:image/png;base64,') >= 3
    assert 'src="http' not in html and "<link" not in html and "<script src" not in html
    charts = sorted(p.name for p in (out / "charts").iterdir())
    assert charts and all(name.endswith(".png") for name in charts)
    for name in charts:
        assert (out / "charts" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_scenario_capture_is_detected_by_the_rules_its_steps_expect(tmp_path):
    captures = sorted(str(p) for p in LAB.glob("*.pcap") if p.stem != "mixed")
    done = _eval(*captures, *_lab_args(), "-o", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    overall = json.loads((tmp_path / "report.json").read_text())["evaluations"][0]
    missed = [(s["name"], step["id"], step["missed"]) for s in overall["scenarios"] for step in s["steps"]
              if step["missed"]]
    assert missed == []
    assert overall["overall"]["captures"] == len(captures)
    assert overall["overall"]["fp"] == 0 and overall["false_positives"] == []


def test_missing_or_mismatched_truth_is_a_usage_error(tmp_path):
    capture = tmp_path / "lone.pcap"
    shutil.copy(LAB / "shadowray.pcap", capture)
    missing = _eval(str(capture), "-o", str(tmp_path / "r"))
    assert missing.returncode == 2 and "no truth file" in missing.stdout + missing.stderr
    broken = tmp_path / "broken.truth.json"
    broken.write_text('{"format": "something-else/9"}')
    wrong = _eval(str(capture), "--truth", str(broken), "-o", str(tmp_path / "r"))
    assert wrong.returncode == 2 and "broken.truth.json" in wrong.stdout + wrong.stderr


def test_a_truth_file_of_another_capture_is_refused(tmp_path):
    """mixed.truth.json names mixed.pcap and its packet count: scoring shadowray.pcap with it would
    report every alert as a false positive and every step as missed, quietly."""
    done = _eval(str(LAB / "shadowray.pcap"), "--truth", str(LAB / "mixed.truth.json"), "-o", str(tmp_path / "r"))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is the truth of mixed.pcap (2851 packets), but" in done.stdout and "has 18 packets" in done.stdout
    assert not (tmp_path / "r").exists()


def test_a_renamed_capture_is_scored_with_a_warning_and_no_other_stderr(tmp_path):
    """Same packet count, another file name: a renamed copy, scored with a warning. Nothing detected
    (rules of another protocol): the time-to-detection chart is drawn without a matplotlib warning."""
    capture = tmp_path / "copy.pcap"
    shutil.copy(LAB / "shadowray.pcap", capture)
    done = _eval(str(capture), "--truth", str(LAB / "shadowray.truth.json"), "--rules",
                 str(REPO / "signatures" / "nccl"), "-o", str(tmp_path / "r"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: " in done.stdout and "scored against the truth of shadowray.pcap" in done.stdout
    assert done.stderr == ""
    report = json.loads((tmp_path / "r" / "report.json").read_text())["evaluations"][0]["overall"]
    assert report["steps_detected"] == 0 and (tmp_path / "r" / "charts").is_dir()


def test_a_transaction_seen_as_another_event_type_is_not_counted_seen(tmp_path):
    """The eval matches records to the truth by flow and tx_id, then compares the event type."""
    truth = json.loads((LAB / "shadowray.truth.json").read_text())
    transaction = truth["flows"][0]["transactions"][0]
    transaction["event_type"] = "ollama" if transaction["event_type"] != "ollama" else "llm"
    (tmp_path / "shadowray.truth.json").write_text(json.dumps(truth))
    shutil.copy(LAB / "shadowray.pcap", tmp_path / "shadowray.pcap")
    done = _eval(str(tmp_path / "shadowray.pcap"), *_lab_args(), "-o", str(tmp_path / "r"))
    assert done.returncode == 0, done.stdout + done.stderr
    overall = json.loads((tmp_path / "r" / "report.json").read_text())["evaluations"][0]["overall"]
    assert overall["truth_transactions_other_type"] == 1
    assert overall["truth_transactions_seen"] == overall["truth_transactions"] - 1
    assert "(1 as another type)" in (tmp_path / "r" / "report.md").read_text()


def test_anomaly_rules_scored_with_the_shipped_lab_baseline(tmp_path):
    """What the anomaly rules add to the signatures on the lab, with the baseline learned from
    benign traffic of another seed (pcaps/lab/baseline.json)."""
    done = _eval(str(LAB / "mixed.pcap"), *_lab_args(), "--compare-baseline", str(LAB / "baseline.json"),
                 "--name", "signatures", "--compare-name", "signatures + anomaly", "-o", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    before, after = (e["overall"] for e in report["evaluations"])
    assert before["fired_pairs"] == after["fired_pairs"] == after["expected_pairs"]
    assert after["tp"] > before["tp"] and after["fp"] == before["fp"] == 0
    anomaly = {r["sid"]: r for r in report["evaluations"][1]["rules_scored"] if r["sid"] // 100 == 47000}
    assert anomaly[4700001]["tp"] > 0 and anomaly[4700004]["tp"] > 0  # rate spikes, new clients
    assert all(r["fp"] == 0 for r in anomaly.values())
    by_scenario = {s["name"]: s["alerts"] for s in report["evaluations"][1]["scenarios"]}
    assert "4700001" in by_scenario["model-extraction-rate"]
    markdown = (tmp_path / "report.md").read_text()
    assert "anomaly baseline `" in markdown and "Alerts on attack traffic added:" in markdown
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    bad = _eval(str(LAB / "mixed.pcap"), "--baseline", str(broken), "-o", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "baseline" in bad.stdout + bad.stderr
