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
        assert sidecar.health()["gc"] == "frozen"  # the new rule set frozen again (gcfreeze.refreeze)


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


def test_rule_files_that_change_are_reloaded_with_an_interval(rest_upstream, certs, tmp_path):
    """--reload-interval: a rules directory laid out like a Kubernetes ConfigMap volume (files in
    ..<version>/, ..data pointing there, top-level symlinks) is updated the way the kubelet does it,
    by swapping ..data; the sidecar reloads without a signal, refuses a broken version once (the
    running rules stay) and takes the next good one."""
    rules = tmp_path / "rules"
    rules.mkdir()

    def publish(version: str, sid: int | None, prefix: str = "") -> None:
        folder = rules / f"..{version}"
        folder.mkdir()
        if sid is None:
            (folder / "rule.yml").write_text("title: half a rule\nsid: 9600019\n")
        else:
            write_rule(folder, sid, f"Pages under {prefix}", "http", {"http.url|startswith": prefix},
                       action="block").rename(folder / "rule.yml")
        (rules / "..data_tmp").symlink_to(folder.name)
        (rules / "..data_tmp").rename(rules / "..data")  # the atomic swap
        if not (rules / "rule.yml").is_symlink():
            (rules / "rule.yml").symlink_to("..data/rule.yml")

    publish("v1", 9600011, "/admin")
    ca = str(certs.ca)
    with Sidecar(tmp_path, f"http://127.0.0.1:{rest_upstream.port}", rules, cert=certs.server_cert,
                 key=certs.server_key, args=["--reload-interval", "0.2"]) as sidecar:
        assert _status(sidecar, ca, "/admin/x") == 403
        assert _status(sidecar, ca, "/debug/x") == 404

        publish("v2", 9600012, "/debug")
        wait_for(lambda: sidecar.metric("inspector_reloads_total", result="ok") == 1)
        assert "files changed: reloading" in sidecar.log_text()
        assert _status(sidecar, ca, "/debug/x") == 403
        assert _status(sidecar, ca, "/admin/x") == 404

        publish("v3", None)
        wait_for(lambda: sidecar.metric("inspector_reloads_total", result="failed") == 1)
        assert _status(sidecar, ca, "/debug/x") == 403  # the running rules stay
        publish("v4", 9600014, "/model")
        wait_for(lambda: sidecar.metric("inspector_reloads_total", result="ok") == 2)
        assert sidecar.metric("inspector_reloads_total", result="failed") == 1  # the broken one was tried once
        assert _status(sidecar, ca, "/model/x") == 403
        assert _status(sidecar, ca, "/debug/x") == 404
