"""`inspector proxy --processes N`: N sidecar processes behind each listening port (SO_REUSEPORT).

The parent prepares what must be shared (the state directory and mitmproxy's CA, so every
process serves the same certificates), then forks N workers. Each runs the whole sidecar
(mitmproxy and the addon) and binds the same ports with SO_REUSEPORT, so the kernel spreads
incoming connections across them; a connection, and every request on it, stays in one worker.

What each worker has of its own, and how it is told apart:

- EVE: worker i writes `<stem>.<i><suffix>` beside the `--eve` file (`eve.json` -> `eve.0.json`,
  `eve.1.json`, ...): one writer per file, so records never interleave. Ship `eve.*.json`.
- Metrics and health: worker i listens on the `--metrics` port + i (scrape them all; sum the
  counters).
- Rate windows: per worker unless `--redis` shares them (what a rate rule needs when one
  client's connections land in different workers; a warning says so when rate rules are loaded
  without it). Online anomaly baselines and the segmentation policy's per-flow state are per
  worker.

Signals: SIGTERM/SIGINT stop every worker; SIGHUP is passed on (reload rules, reopen EVE). When
a worker exits on its own the others are stopped and the parent exits with its status, so a
supervisor (systemd, Kubernetes) restarts the set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import types
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

log = logging.getLogger("inspector.live")


def worker_eve(path: str, index: int) -> str:
    """`eve.json` -> `eve.<index>.json` (the path of worker `index`'s EVE file)."""
    target = Path(path)
    return str(target.with_name(f"{target.stem}.{index}{target.suffix}"))


def worker_metrics(value: str, index: int) -> str:
    """`HOST:PORT` -> `HOST:PORT+index`; `off` stays off."""
    if value == "off":
        return value
    host, _, port = value.rpartition(":")
    return f"{host}:{int(port) + index}"


def listen_with_reuseport() -> None:
    """Make mitmproxy's TCP listeners bind with SO_REUSEPORT (its servers call asyncio.start_server
    with a host and port; this process's mode_servers module gets a start_server that adds the flag).
    Reverse proxies to `https://` upstreams also listen on UDP for HTTP/3, which cannot be shared
    this way: in a worker they listen on TCP only (QUIC is not inspected in any case)."""
    from mitmproxy.proxy import mode_servers, mode_specs

    shim = types.ModuleType("asyncio_reuseport")
    shim.__dict__.update(asyncio.__dict__)
    shim.start_server = partial(asyncio.start_server, reuse_port=True)  # type: ignore[attr-defined]
    mode_servers.asyncio = shim  # type: ignore[attr-defined]
    original = mode_specs.ReverseMode.__post_init__

    def tcp_only(self: Any) -> None:
        original(self)
        if self.transport_protocol == mode_specs.BOTH:
            object.__setattr__(self, "transport_protocol", mode_specs.TCP)

    mode_specs.ReverseMode.__post_init__ = tcp_only  # type: ignore[method-assign]


def prepare_shared_state(confdir: Path) -> None:
    """Create mitmproxy's CA in the state directory once, before the workers start (each would
    otherwise make its own)."""
    from mitmproxy import certs

    certs.CertStore.from_store(str(confdir), "mitmproxy", 2048)


def run_workers(count: int, values: dict[str, Any], serve: Callable[[dict[str, Any]], int]) -> int:
    """Fork `count` workers, each `serve(values_i)`; wait; return the first failing status (or 0)."""
    prepare_shared_state(Path(values["confdir"]))
    children: dict[int, int] = {}
    for index in range(count):
        mine = dict(values, inspector_eve=worker_eve(values["inspector_eve"], index),
                    inspector_metrics=worker_metrics(values["inspector_metrics"], index))
        if values.get("inspector_baseline_save"):  # each worker learns its own share of the traffic
            mine["inspector_baseline_save"] = worker_eve(values["inspector_baseline_save"], index)
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                listen_with_reuseport()
                status = serve(mine)
            finally:
                os._exit(status)
        children[pid] = index
    log.warning("inspector proxy: %d worker processes (pids %s), SO_REUSEPORT on every listener", count,
                " ".join(map(str, children)))

    def forward(signum: int, _frame: Any) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    status = 0
    stopping = False
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        index = children.pop(pid, None)
        exit_status = os.waitstatus_to_exitcode(code)
        if index is None:
            continue
        if not stopping:
            if exit_status != 0:
                print(f"inspector proxy: worker {index} exited with {exit_status}; stopping the others",
                      file=sys.stderr)
            status = status or (exit_status if exit_status > 0 else 1 if exit_status else 0)
            stopping = True
            forward(signal.SIGTERM, None)
    return status
