"""FastAddonManager against mitmproxy's own AddonManager: the same calls in the same order, the
same errors logged, the same halts, on the same chains (real mitmproxy masters and hooks)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import subprocess
import sys
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from live_sidecar import Sidecar, eve_records, free_port, wait_for, write_rule
from mitmproxy import addonmanager, exceptions
from mitmproxy.proxy.layers import http as http_layer
from mitmproxy.test import taddons, tflow

from inspector.live.addon import InspectorAddon
from inspector.live.hookdispatch import FastAddonManager, set_fast_dispatch
from inspector.live.malloctune import glibc_version

_ADDRESS = re.compile(r"0x[0-9a-f]+")  # object addresses differ between the two runs' instances


class Sync:
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls

    def request(self, flow) -> None:
        self.calls.append(self.name)


class Async(Sync):
    async def request(self, flow) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.calls.append(self.name)


class NoHook:
    def __init__(self, name: str) -> None:
        self.name = name


class Raises(Sync):
    def request(self, flow) -> None:
        self.calls.append(self.name)
        raise ValueError(f"{self.name} failed")


class Halts(Sync):
    def request(self, flow) -> None:
        self.calls.append(self.name)
        raise exceptions.AddonHalt()


class Refuses(Sync):
    def request(self, flow) -> None:
        self.calls.append(self.name)
        raise exceptions.OptionsError("refused")


class Parent(Sync):
    def __init__(self, name: str, calls: list[str], children: list) -> None:
        super().__init__(name, calls)
        self.addons = children


class ModuleNamed:
    """An addon that imported a module under a hook's name (mitmproxy skips it)."""

    name = "module_named"
    request = types


class NotCallable:
    name = "not_callable"
    request = 42


def _chain(calls: list[str]) -> list:
    return [
        Sync("first", calls),
        NoHook("nohook"),
        Async("async", calls),
        Raises("raises", calls),
        ModuleNamed(),
        NotCallable(),
        Parent("parent", calls, [Sync("child", calls), Raises("child_raises", calls), Sync("grandchild", calls)]),
        Sync("last", calls),
    ]


def _run(chain_of, caplog=None, *, sync: bool = False) -> list[tuple[list[str], list[str]]]:
    """Trigger the request hook over the chain with mitmproxy's manager, then with ours, in one
    event loop (mitmproxy's log handlers post to the loop of the test's first master);
    [(calls, error log lines)] for each. `sync`: through `trigger` instead of `trigger_event`."""

    async def both() -> list[tuple[list[str], list[str]]]:
        return [await _trigger(manager_class, chain_of, caplog, sync)
                for manager_class in (addonmanager.AddonManager, FastAddonManager)]

    return asyncio.run(both())


async def _trigger(manager_class: type, chain_of, caplog, sync: bool = False) -> tuple[list[str], list[str]]:
    calls: list[str] = []
    with taddons.context() as tctx:  # inside the loop: mitmproxy's log handler posts to it
        manager = tctx.master.addons
        manager.__class__ = manager_class
        manager.add(*chain_of(calls))
        if caplog is not None:
            caplog.clear()
        hook = http_layer.HttpRequestHook(tflow.tflow())
        if sync:
            manager.trigger(hook)
        else:
            await manager.handle_lifecycle(hook)
        errors = [_ADDRESS.sub("0x?", r.getMessage()) for r in caplog.records
                  if r.levelno >= logging.ERROR] if caplog else []
    return calls, errors


def test_same_calls_and_errors_as_mitmproxy(caplog):
    caplog.set_level(logging.ERROR)
    (mitmproxy_calls, mitmproxy_errors), (fast_calls, fast_errors) = _run(_chain, caplog)
    assert fast_calls == mitmproxy_calls
    # a failing handler is logged and the chain goes on; inside a parent, the rest of its subtree is skipped
    assert fast_calls == ["first", "async", "raises", "parent", "child", "child_raises", "last"]
    assert fast_errors == mitmproxy_errors
    assert any("raises failed" in line for line in fast_errors)
    assert any("not callable" in line for line in fast_errors)


def test_the_synchronous_trigger_alike(caplog):
    caplog.set_level(logging.ERROR)
    (mitmproxy_calls, mitmproxy_errors), (fast_calls, fast_errors) = _run(_chain, caplog, sync=True)
    assert fast_calls == mitmproxy_calls == ["first", "raises", "parent", "child", "child_raises", "last"]
    assert fast_errors == mitmproxy_errors
    assert any("cannot be called from sync context" in line for line in fast_errors)  # the async handler


@pytest.mark.parametrize("sync", [False, True], ids=["trigger_event", "trigger"])
def test_halt_stops_the_chain_alike(sync):
    def chain(calls):
        return [Sync("a", calls), Halts("halt", calls), Sync("after", calls)]

    (mitmproxy_calls, _), (fast_calls, _) = _run(chain, sync=sync)
    assert fast_calls == mitmproxy_calls == ["a", "halt"]


@pytest.mark.parametrize("sync", [False, True], ids=["trigger_event", "trigger"])
def test_options_error_propagates_alike(sync):
    def chain(calls):
        return [Sync("a", calls), Refuses("refuses", calls), Sync("after", calls)]

    async def each() -> None:
        for manager_class in (addonmanager.AddonManager, FastAddonManager):
            with pytest.raises(exceptions.OptionsError):
                await _trigger(manager_class, chain, None, sync)

    asyncio.run(each())


def test_addons_changed_at_run_time_are_seen():
    asyncio.run(_changed_at_run_time())


async def _changed_at_run_time() -> None:
    calls: list[str] = []
    with taddons.context() as tctx:
        manager = tctx.master.addons
        set_fast_dispatch(tctx.master)
        assert type(manager) is FastAddonManager
        parent = Parent("parent", calls, [])
        manager.add(Sync("a", calls), parent)
        hook = http_layer.HttpRequestHook(tflow.tflow())
        await manager.trigger_event(hook)
        parent.addons.append(Sync("late_child", calls))  # a script reloaded under its loader
        manager.add(Sync("late", calls))
        await manager.trigger_event(hook)
        manager.remove(manager.get("a"))
        await manager.trigger_event(hook)
    assert calls == ["a", "parent", "a", "parent", "late_child", "late", "parent", "late_child", "late"]


def test_the_option_switches_the_master_both_ways(tmp_path):
    asyncio.run(_switches(tmp_path))


async def _switches(tmp_path) -> None:
    addon = InspectorAddon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, inspector_metrics="off", inspector_eve=str(tmp_path / "eve.json"))
        assert type(tctx.master.addons) is addonmanager.AddonManager
        addon.running()  # on by default, switched when the proxy runs (no option was changed)
        assert type(tctx.master.addons) is FastAddonManager
        tctx.configure(addon, inspector_fast_dispatch=False)
        assert type(tctx.master.addons) is addonmanager.AddonManager
        tctx.configure(addon, inspector_fast_dispatch=True)
        assert type(tctx.master.addons) is FastAddonManager
        addon.done()


def test_a_manager_of_another_class_is_left_alone():
    class Custom(addonmanager.AddonManager):
        pass

    with taddons.context() as tctx:
        tctx.master.addons.__class__ = Custom
        set_fast_dispatch(tctx.master)
        assert type(tctx.master.addons) is Custom


def _block_and_alert_rules(tmp_path: Path, first_sid: int) -> Path:
    """An alert rule on inference calls (`first_sid`) and a block rule on /admin (`first_sid` + 1)."""
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, first_sid, "inference seen", "http", {"http.url|endswith": "/infer"})
    write_rule(rules, first_sid + 1, "admin page", "http", {"http.url|startswith": "/admin"}, action="block")
    return rules


INFER_BODY = json.dumps({"inputs": [
    {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))},
    {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16}]}).encode()


def _infer_passes_admin_is_blocked(base: str, context: ssl.SSLContext | None = None) -> None:
    """Through the proxy at `base`: an inference call gets the server's answer, /admin a 403."""
    request = urllib.request.Request(f"{base}/v2/models/simple/infer", data=INFER_BODY,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        assert response.status == 200
        assert json.loads(response.read())["outputs"][0]["name"] == "OUTPUT0"
    with pytest.raises(urllib.error.HTTPError) as blocked:
        urllib.request.urlopen(f"{base}/admin", context=context, timeout=10)
    assert blocked.value.code == 403


@pytest.mark.parametrize("fast", [True, False], ids=["tuned", "as_mitmproxy"])
def test_the_sidecar_inspects_and_blocks_alike_with_or_without_tuning_mitmproxy(fast, rest_upstream, certs,
                                                                                tmp_path):
    """By default the sidecar tunes mitmproxy (the hook dispatch, 256 KiB reads, glibc's malloc
    thresholds, start-up objects frozen out of full collections); with all four off it runs as
    mitmproxy does, and inspects the same."""
    rules = _block_and_alert_rules(tmp_path, 9300001)
    context = ssl.create_default_context(cafile=str(certs.ca))
    args = [] if fast else ["--set", "inspector_fast_dispatch=false", "--set", "inspector_read_size=65535",
                            "--set", "inspector_malloc_tuning=false", "--set", "inspector_gc_freeze=false"]
    earlier = len(rest_upstream.calls)  # the upstream is the session's: other tests' calls come before
    with Sidecar(tmp_path, f"http://127.0.0.1:{rest_upstream.port}", rules, cert=certs.server_cert,
                 key=certs.server_key, args=args) as sidecar:
        _infer_passes_admin_is_blocked(f"https://localhost:{sidecar.port}", context)
        alerts = sidecar.wait_records(lambda rs: len({r["alert"]["signature_id"] for r in rs
                                                      if r["event_type"] == "alert"}) == 2 and rs)
        health = sidecar.health()
    if fast:
        malloc = "tuned" if glibc_version() else "not glibc"
        assert (health["hook_dispatch"], health["read_size"], health["malloc"], health["gc"]) == (
            "fast", 262144, malloc, "frozen")
    else:
        assert (health["hook_dispatch"], health["read_size"], health["malloc"], health["gc"]) == (
            "mitmproxy", 65535, "glibc", "collector")
    actions = {r["alert"]["signature_id"]: r["alert"]["action"] for r in alerts if r["event_type"] == "alert"}
    assert actions == {9300001: "allowed", 9300002: "blocked"}
    assert not any(path.startswith("/admin") for _, path in rest_upstream.calls[earlier:])


def test_the_addon_in_plain_mitmdump_inspects_with_the_fast_dispatch(rest_upstream, tmp_path):
    """`mitmdump -s addons/inspector_addon.py` (the addon a child of mitmproxy's script loader, so
    its own hooks take mitmproxy's path while the default addons are skipped): real traffic is
    inspected, alerted on and blocked, and mitmdump is tuned as `inspector proxy` is."""
    rules = _block_and_alert_rules(tmp_path, 9300101)
    port, metrics = free_port(), free_port()
    eve = tmp_path / "eve.json"
    script = Path(__file__).resolve().parents[2] / "addons" / "inspector_addon.py"
    mitmdump = Path(sys.executable).with_name("mitmdump")
    earlier = len(rest_upstream.calls)  # the upstream is the session's: other tests' calls come before
    process = subprocess.Popen([str(mitmdump), "-q", "-s", str(script),
                                "--mode", f"reverse:http://127.0.0.1:{rest_upstream.port}@127.0.0.1:{port}",
                                "--set", f"confdir={tmp_path}", "--set", f"inspector_rules={rules}",
                                "--set", f"inspector_eve={eve}", "--set", f"inspector_metrics=127.0.0.1:{metrics}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(answers, timeout=20)
        _infer_passes_admin_is_blocked(f"http://127.0.0.1:{port}")

        def alerts() -> dict[int, str] | None:
            found = {}
            for record in eve_records(eve):
                if record["event_type"] == "alert":
                    found[record["alert"]["signature_id"]] = record["alert"]["action"]
            return found if len(found) == 2 else None

        assert wait_for(alerts, timeout=10) == {9300101: "allowed", 9300102: "blocked"}
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/healthz", timeout=5) as response:
            health = json.loads(response.read())
        malloc = "tuned" if glibc_version() else "not glibc"
        assert (health["hook_dispatch"], health["read_size"], health["malloc"], health["gc"]) == (
            "fast", 262144, malloc, "frozen")
        assert not any(path.startswith("/admin") for _, path in rest_upstream.calls[earlier:])
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=15)
    assert b"Addon error" not in errors, errors.decode(errors="replace")
