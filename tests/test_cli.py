"""The command line end to end: analyze (EVE, summary, exit status), rules, fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.cli import main

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "pcaps" / "core"


def eve(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def alerts(records: list[dict]) -> list[int]:
    return sorted(r["alert"]["signature_id"] for r in records if r["event_type"] == "alert")


def test_analyze_directory_writes_eve_and_summary(tmp_path, capsys):
    out = tmp_path / "eve.json"
    assert main(["analyze", str(CORE), "--eve", str(out)]) == 0
    records = eve(out)
    assert {r["event_type"] for r in records} >= {"http", "grpc", "flow", "anomaly", "alert"}
    assert alerts(records) == [1002001, 3100001, 3100001, 3100008]
    summary = capsys.readouterr().out
    assert "transactions grpc" in summary and "Alerts by rule" in summary and "3100001" in summary


def test_eve_to_stdout_keeps_stdout_pure_json(capsys):
    assert main(["analyze", str(CORE / "grpc.pcap"), "--eve", "-", "--no-rules"]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert len(records) == 12 and "Summary" in captured.err
    assert records[-1]["event_type"] == "stats"  # the run's counters come last


def test_site_config_suppression_and_variables(tmp_path):
    config = tmp_path / "site.yaml"
    config.write_text("vars:\n  ADMIN_NETS: [10.10.1.0/24]\n"
                      "suppress:\n  - sid: 3100001\n    src_ip: 10.10.2.40\n    reason: lab client\n")
    out = tmp_path / "eve.json"
    assert main(["analyze", str(CORE), "--eve", str(out), "--config", str(config), "-q"]) == 0
    # 3100001 suppressed for the gRPC client and silenced for the REST caller (an admin now);
    # 3100008 (the inline model file of that load) does not depend on the source
    assert alerts(eve(out)) == [1002001, 3100008]


def test_damaged_capture_is_analyzed_up_to_the_damage_and_exit_1(tmp_path, capsys):
    data = (CORE / "http1.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) // 2 + 7])
    out = tmp_path / "eve.json"
    assert main(["analyze", str(cut), "--eve", str(out), "--no-rules"]) == 1
    records = eve(out)
    assert any("http" in r and r["event_type"] != "alert" for r in records)
    damaged = [r for r in records if r["event_type"] == "anomaly" and r["anomaly"]["event"] == "capture_damaged"]
    assert len(damaged) == 1 and "record" in damaged[0]["anomaly"]["message"]
    assert "byte" in capsys.readouterr().out


def test_not_a_capture_and_missing_paths(tmp_path):
    junk = tmp_path / "notes.pcap"
    junk.write_text("this is not a capture\n")
    assert main(["analyze", str(junk), "--eve", str(tmp_path / "e.json"), "-q"]) == 1
    assert main(["analyze", str(tmp_path / "missing.pcap"), "-q"]) == 2


def test_broken_rules_refuse_to_run(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("title: broken\nid: 1\nsid: x\n")
    assert main(["analyze", str(CORE), "--rules", str(bad), "--eve", str(tmp_path / "e.json"), "-q"]) == 2
    captured = capsys.readouterr()
    assert f"{bad}:" in captured.err and captured.out == ""  # errors on stderr, as every analyze error


def test_rules_validate_list_and_test(capsys):
    assert main(["rules", "validate"]) == 0
    assert f"{len(list((REPO / 'signatures').rglob('*.yml')))} rule(s) valid" in capsys.readouterr().out
    assert main(["rules", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {row["sid"] for row in rows} >= {1002001, 3100001}
    assert main(["rules", "test", str(REPO / "tests" / "signatures" / "http_request_smuggling")]) == 0
    assert "2 of 2 fixture(s) passed" in capsys.readouterr().out


def test_rules_validate_reports_file_and_line(tmp_path, capsys):
    rule = (REPO / "signatures" / "grpc" / "grpc_failed_call_burst.yml").read_text()
    broken = tmp_path / "grpc_broken.yml"
    broken.write_text(rule.replace("grpc.status|gt: 0", "grpc.statuz|gt: 0"))
    assert main(["rules", "validate", str(broken)]) == 1
    out = capsys.readouterr().out
    line = rule.splitlines().index("    grpc.status|gt: 0") + 1
    assert f"{broken}:{line}:" in out and "grpc.statuz" in out


@pytest.mark.parametrize("event", [None, "grpc"])
def test_fields_catalogue(capsys, event):
    argv = ["fields", "--json"] + (["--event", event] if event else [])
    assert main(argv) == 0
    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert {"src_ip", "http.url", "grpc.method"} <= names
    if event is None:
        assert "anomaly.event" in names and "flow.pkts_toserver" in names


def test_analyze_starts_without_the_other_commands_modules(tmp_path):
    """`inspector analyze` registers and imports only what it runs: not the sidecar (its
    certificates, asyncio), the lab or the evaluation; not rich when it has nothing to print (-q),
    nor picklescan when no pickle went by, nor the policy and anomaly machinery without --policy
    and --baseline (the field catalogue imports only their field declarations); every command
    is still there otherwise."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from inspector.cli import build_parser, main\n"
        f"status = main(['analyze', {str(CORE / 'grpc.pcap')!r}, '--eve', {str(tmp_path / 'eve.json')!r}, '-q'])\n"
        "heavy = sorted(m for m in ('inspector.live.proxy', 'inspector.live.certs', 'asyncio',"
        " 'inspector.eval', 'inspector.lab.cli', 'rich', 'picklescan', 'inspector.policy.loader',"
        " 'inspector.policy.monitor', 'inspector.anomaly.baseline') if m in sys.modules)\n"
        "commands = sorted(build_parser()._subparsers._group_actions[0].choices)\n"
        "print(status, heavy, commands)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    status, heavy, commands = done.stdout.strip().split(" ", 2)
    assert status == "0" and heavy == "[]", done.stdout
    assert all(f"'{name}'" in commands for name in ("analyze", "proxy", "certs", "lab", "eval", "rules", "baseline"))
    records = eve(tmp_path / "eve.json")  # the capture's 11 records and its one alert, as before
    assert len(records) == 13 and alerts(records) == [3100001]


def test_python_dash_m_runs_the_same_command_line(tmp_path):
    """`python -m inspector` is the `inspector` script: same commands, same exit status."""
    import subprocess
    import sys

    out = tmp_path / "eve.json"
    done = subprocess.run([sys.executable, "-m", "inspector", "analyze", str(CORE / "grpc.pcap"), "--eve", str(out),
                           "-q"], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert alerts(eve(out)) == [3100001]
    missing = subprocess.run([sys.executable, "-m", "inspector", "analyze", str(tmp_path / "absent.pcap")],
                             capture_output=True, text=True, cwd=REPO)
    assert missing.returncode != 0 and "absent.pcap" in missing.stderr


def test_text_from_captures_and_rules_is_printed_verbatim(tmp_path, capsys):
    """Rule titles, paths and error messages are data, not console markup: square brackets in
    them reach the terminal as written."""
    rule = (REPO / "signatures" / "triton" / "triton_management_outside_admin.yml").read_text()
    title = next(line for line in rule.splitlines() if line.startswith("title: "))
    renamed = tmp_path / "rules"
    renamed.mkdir()
    (renamed / "r.yml").write_text(rule.replace(title, "title: 'Model [bold]control[/bold] call [x]'"))
    assert main(["analyze", str(CORE / "grpc.pcap"), "--rules", str(renamed), "--eve",
                 str(tmp_path / "eve.json")]) == 0
    assert "Model [bold]control[/bold] call [x]" in capsys.readouterr().out

    broken = tmp_path / "broken.yml"
    broken.write_text(rule.replace("triton.setting_names|exists: true", "triton.model|re: '[bold]([a-z'"))
    assert main(["rules", "validate", str(broken)]) == 1
    assert "'[bold]([a-z'" in capsys.readouterr().out


def test_analyze_errors_go_to_stderr(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "absent[1].pcap")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "absent[1].pcap" in captured.err


def test_outputs_that_cannot_be_written_are_refused_before_reading(tmp_path, capsys):
    capture = tmp_path / "in.pcap"
    capture.write_bytes((CORE / "grpc.pcap").read_bytes())
    assert main(["analyze", str(capture), "--eve", str(capture)]) == 2  # the input would be overwritten
    assert "one of the captures to read" in capsys.readouterr().err
    assert capture.read_bytes() == (CORE / "grpc.pcap").read_bytes()
    assert main(["analyze", str(capture), "--eve", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    link = tmp_path / "metrics.prom"
    link.symlink_to(tmp_path / "elsewhere.prom")
    assert main(["analyze", str(capture), "--eve", str(tmp_path / "e.json"), "--metrics-textfile", str(link)]) == 2
    assert "not a regular file" in capsys.readouterr().err and link.is_symlink()


def test_an_eve_output_that_fails_is_an_error_not_a_traceback(tmp_path):
    """A write that fails mid-run (here the file-size limit, EFBIG, as a full disk gives ENOSPC)."""
    import subprocess
    import sys

    out = tmp_path / "eve.json"
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
            "from inspector.cli import main\n"
            f"sys.exit(main(['analyze', {str(CORE / 'grpc.pcap')!r}, '--eve', {str(out)!r}, '-q']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1, done.stderr
    assert f"writing EVE to {out} failed: File too large" in done.stderr and "Traceback" not in done.stderr


def test_an_unreadable_capture_is_an_anomaly_record_and_said_even_quiet(tmp_path, capsys):
    text = tmp_path / "notes.pcap"
    text.write_text("hello, not a capture\n")
    out = tmp_path / "eve.json"
    assert main(["analyze", str(text), str(CORE / "grpc.pcap"), "--eve", str(out), "-q"]) == 1
    (damaged,) = [r for r in eve(out) if r["event_type"] == "anomaly" and r["anomaly"]["layer"] == "capture"]
    assert damaged["anomaly"]["event"] == "capture_damaged" and damaged["anomaly"]["message"].startswith(str(text))
    assert f"{text}: not a pcap, pcapng or gzip capture" in capsys.readouterr().err


def test_a_pipe_is_sharded_across_workers_read_once(tmp_path):
    """A capture on standard input (a pipe: read once) analyzed with --workers 2 gives the EVE of
    the same capture read from its file by one process. In a child process (a fork, no threads)."""
    import subprocess
    import sys

    capture = REPO / "pcaps" / "lab" / "mixed.pcap"
    args = ["analyze", "--config", str(REPO / "pcaps" / "lab" / "site.yaml"), "-q"]
    one = subprocess.run([sys.executable, "-m", "inspector.cli", *args, str(capture), "--eve",
                          str(tmp_path / "one.json")], cwd=REPO, capture_output=True, text=True, timeout=120)
    with subprocess.Popen(["cat", str(capture)], stdout=subprocess.PIPE) as cat:
        piped = subprocess.run([sys.executable, "-m", "inspector.cli", *args, "/dev/stdin", "--workers", "2",
                                "--eve", str(tmp_path / "piped.json")],
                               cwd=REPO, stdin=cat.stdout, capture_output=True, text=True, timeout=120)
    assert one.returncode == piped.returncode == 0, piped.stderr
    assert "not a regular file" not in piped.stderr
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "piped.json").read_bytes()


def test_identical_decode_anomalies_are_capped_per_capture(tmp_path):
    from inspector.capture.decode import MAX_ANOMALIES_PER_EVENT
    from inspector.lab.craft import write_pcap

    capture = tmp_path / "zeros.pcap"
    write_pcap(capture, [(1.0 + n / 1000, b"") for n in range(MAX_ANOMALIES_PER_EVENT + 500)])
    out = tmp_path / "eve.json"
    assert main(["analyze", str(capture), "--eve", str(out), "-q"]) == 0
    records = eve(out)
    anomalies = [r["anomaly"] for r in records if r["event_type"] == "anomaly"]
    assert len(anomalies) == MAX_ANOMALIES_PER_EVENT and "counted, not written" in anomalies[-1]["message"]
    assert records[-1]["stats"]["decoder"] == {"truncated_link": MAX_ANOMALIES_PER_EVENT + 500,
                                               "anomalies_capped": 500}


def test_sigterm_stops_the_workers_and_removes_their_spool(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    spool_root = tmp_path / "tmp"
    spool_root.mkdir()
    files = [str(CORE / "grpc.pcap")] * 400 + [str(CORE / "http2.pcap")] * 400
    command = [sys.executable, "-m", "inspector", "analyze", *files, "--workers", "2", "--shard", "files",
               "--eve", str(tmp_path / "eve.json"), "-q"]
    run = subprocess.Popen(command, cwd=REPO, env={**os.environ, "TMPDIR": str(spool_root)}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not any(spool_root.iterdir()) and time.monotonic() < deadline:  # the workers are running
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 128 + signal.SIGTERM, stderr.decode()[-2000:]
    assert list(spool_root.iterdir()) == [] and b"Traceback" not in stderr


def test_what_a_directory_walk_leaves_out_is_said(tmp_path, capsys):
    import os

    (tmp_path / "good.pcap").write_bytes((CORE / "grpc.pcap").read_bytes())
    (tmp_path / "gone.pcap").symlink_to(tmp_path / "deleted.pcap")
    os.mkfifo(tmp_path / "live.pcap")  # reading it would block: never opened
    assert main(["analyze", str(tmp_path), "--eve", str(tmp_path / "eve.json"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "gone.pcap skipped" in err and "live.pcap skipped" in err
    assert len(eve(tmp_path / "eve.json")) == 13
