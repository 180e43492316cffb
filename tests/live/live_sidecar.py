"""Test helpers: run `inspector proxy` as a real process, read its EVE file and metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> int:
    """The first of `count` consecutive ports that are free now (a sidecar with --processes N
    serves metrics on port, port+1, ...)."""
    for _ in range(50):
        base = free_port()
        if base + count > 65536:
            continue
        sockets = []
        try:
            for offset in range(1, count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


RULE_TEMPLATE = """title: {title}
id: {uuid}
sid: {sid}
status: test
level: high
event: {event}
detection:
  selection:
{selection}
  condition: selection
action: {action}
{rate}"""


def write_rule(directory: Path, sid: int, title: str, event: str, selection: dict[str, Any], *,
               action: str = "alert", rate: dict[str, Any] | None = None) -> Path:
    """One rule file (YAML written by hand so values stay as given)."""
    lines = "\n".join(f"    {field}: {json.dumps(value)}" for field, value in selection.items())
    rate_text = ""
    if rate is not None:
        rate_text = "rate:\n" + "\n".join(f"  {key}: {json.dumps(value)}" for key, value in rate.items()) + "\n"
    path = directory / f"rule_{sid}.yml"
    path.write_text(RULE_TEMPLATE.format(title=title, uuid=f"00000000-0000-4000-8000-{sid:012d}", sid=sid,
                                         event=event, selection=lines, action=action, rate=rate_text))
    return path


def eve_records(path: Path) -> list[dict[str, Any]]:
    """The EVE records written to `path` so far: complete lines only (a sidecar may be in the
    middle of writing the last one)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [json.loads(line) for line in data[:data.rfind(b"\n") + 1].splitlines() if line.strip()]


class Sidecar:
    """`inspector proxy` in its own process."""

    def __init__(self, workdir: Path, upstream: str, rules: Path | list[Path], *, cert: Path | None = None,
                 key: Path | None = None, args: list[str] | None = None, name: str = "sidecar",
                 processes: int = 1) -> None:
        self.workdir = workdir
        self.eve = workdir / f"{name}-eve.json"
        self.log = workdir / f"{name}.log"
        self._processes = processes
        rules_list = rules if isinstance(rules, list) else [rules]
        self._arguments = ["--upstream", upstream, "--eve", str(self.eve)]
        for path in rules_list:
            self._arguments += ["--rules", str(path)]
        if cert is not None and key is not None:
            self._arguments += ["--cert", str(cert), "--key", str(key)]
        self._arguments += args or []
        self._choose_ports()
        self.process: subprocess.Popen | None = None

    def _choose_ports(self) -> None:
        self.port = free_port()
        self.metrics_port = free_ports(self._processes)  # one metrics port per process
        self.command = [sys.executable, "-m", "inspector.cli", "proxy", "--listen", f"127.0.0.1:{self.port}",
                        "--metrics", f"127.0.0.1:{self.metrics_port}", *self._arguments]

    def replace_argument(self, option: str, value: str) -> None:
        """Give `option` another value on the command line (kept if the start must retry)."""
        self._arguments[self._arguments.index(option) + 1] = value
        self.command[self.command.index(option) + 1] = value

    def start(self, timeout: float = 20.0, attempts: int = 3) -> Sidecar:
        """Start and wait until healthy. A port found free can be taken by a parallel test before
        the sidecar binds it: then it starts again on other ports."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for attempt in range(attempts):
            self._log = open(self.log, "wb")  # noqa: SIM115 (closed in stop)
            self.process = subprocess.Popen(self.command, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                            env=env)
            if self._wait_healthy(timeout):
                return self
            if "address already in use" not in self.log_text() or attempt == attempts - 1:
                raise AssertionError(f"sidecar exited with {self.process.returncode}:\n{self.log_text()}")
            self._log.close()
            self._choose_ports()
        raise AssertionError("unreachable")

    def _wait_healthy(self, timeout: float) -> bool:
        """True once healthy; False when the process exited; raises when it stays unhealthy."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                if self.health().get("status") == "ok":
                    return True
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"sidecar not healthy within {timeout} s:\n{self.log_text()}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2) as response:
            return json.loads(response.read())

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
            return response.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample (0 when absent)."""
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}" if labels else "")
        for line in self.metrics_text().splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            if sample == wanted:
                return float(value)
        return 0.0

    def records(self) -> list[dict[str, Any]]:
        return eve_records(self.eve)

    def alerts(self, sid: int | None = None) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["event_type"] == "alert"
                and (sid is None or r["alert"]["signature_id"] == sid)]

    def wait_records(self, condition: Callable[[list[dict[str, Any]]], Any], timeout: float = 10.0) -> Any:
        return wait_for(lambda: condition(self.records()), timeout)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def peak_rss_mib(self) -> float:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> Sidecar:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if exc[0] is None:
            self.assert_records_valid()

    def assert_records_valid(self) -> None:
        """Every EVE record the sidecar wrote validates against the shipped schema."""
        import jsonschema

        from inspector.sinks.eveschema import shipped_schema

        validator = jsonschema.Draft202012Validator(shipped_schema())
        problems = sorted({(r.get("event_type"), "/".join(map(str, e.absolute_path)), e.message[:200])
                           for r in self.records() for e in validator.iter_errors(r)})
        assert problems == [], f"EVE records outside inspector/data/eve.schema.json: {problems[:10]}"
