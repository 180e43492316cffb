"""SIGHUP: rules and config reloaded, a broken set refused with the running rules kept; the EVE
file reopened after rotation."""

from __future__ import annotations

import signal
import ssl
import urllib.error
import urllib.request

from live_sidecar import Sidecar, wait_for, write_rule


def _status(sidecar: Sidecar, ca: str, path: str) -> int:
    context = ssl.create_default_context(cafile=ca)
    try:
        with urllib.request.urlopen(f"https://localhost:{sidecar.port}{path}", context=context, timeout=5) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def test_sighup_reloads_rules_and_keeps_them_when_broken(rest_upstream, certs, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    first = write_rule(rules, 9600001, "Admin pages", "http", {"http.url|startswith": "/admin"}, action="block")
    ca = str(certs.ca)
    with Sidecar(tmp_path, f"http://127.0.0.1:{rest_upstream.port}", rules, cert=certs.server_cert,
                 key=certs.server_key) as sidecar:
        assert _status(sidecar, ca, "/admin/x") == 403
        assert _status(sidecar, ca, "/debug/x") == 404  # the upstream's answer

        broken = rules / "broken.yml"
        broken.write_text("title: half a rule\nsid: 9600002\nevent: http\ndetection:\n  selection:\n"
                          "    http.no_such_field: 1\n  condition: selection\n")
        sidecar.signal(signal.SIGHUP)
        wait_for(lambda: sidecar.metric("inspector_reloads_total", result="failed") == 1)
        assert "reload refused" in sidecar.log_text() and "broken.yml" in sidecar.log_text()
        assert _status(sidecar, ca, "/admin/x") == 403  # the running rules stay
        assert sidecar.health()["rules"] == 1

        broken.unlink()
        first.unlink()
        write_rule(rules, 9600003, "Debug pages", "http", {"http.url|startswith": "/debug"}, action="block")
        sidecar.signal(signal.SIGHUP)
        wait_for(lambda: sidecar.metric("inspector_reloads_total", result="ok") == 1)
        assert _status(sidecar, ca, "/admin/x") == 404
        assert _status(sidecar, ca, "/debug/x") == 403
        assert sidecar.metric("inspector_rules_loaded") == 1


def test_sighup_reopens_the_eve_file(rest_upstream, certs, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    write_rule(rules, 9600010, "Admin pages", "http", {"http.url|startswith": "/admin"})
    with Sidecar(tmp_path, f"http://127.0.0.1:{rest_upstream.port}", rules, cert=certs.server_cert,
                 key=certs.server_key) as sidecar:
        _status(sidecar, str(certs.ca), "/admin/one")
        sidecar.wait_records(lambda rs: any(r["event_type"] == "alert" for r in rs))
        rotated = sidecar.eve.with_name("rotated.json")
        sidecar.eve.rename(rotated)
        sidecar.signal(signal.SIGHUP)
        wait_for(lambda: sidecar.eve.exists())
        _status(sidecar, str(certs.ca), "/admin/two")
        records = sidecar.wait_records(lambda rs: [r for r in rs if r["event_type"] == "alert"])
        assert [r["http"]["url"] for r in records] == ["/admin/two"]
        assert "/admin/one" in rotated.read_text() and "/admin/two" not in rotated.read_text()
