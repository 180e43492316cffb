"""`inspector analyze --keylog`: decrypted records in the EVE file, the TLS summary, bad key logs."""

from __future__ import annotations

import json

from tls_traffic import MemoryTls, contexts, write_pcap

from inspector.cli import EXIT_OK, EXIT_USAGE, main
from inspector.lab.craft import CLIENT, SERVER


def test_keylog_option_decrypts_and_the_summary_counts(tmp_path, capsys):
    client, server, keylog = contexts(tmp_path)
    tls = MemoryTls(client, server).handshake()
    tls.send(CLIENT, b"GET /api/status HTTP/1.1\r\nHost: models.internal\r\n\r\n")
    tls.send(SERVER, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    tls.close()
    write_pcap(tmp_path / "c.pcap", tls.chunks)
    eve = tmp_path / "eve.json"
    assert main(["analyze", str(tmp_path / "c.pcap"), "--keylog", str(keylog), "--eve", str(eve),
                 "--no-rules"]) == EXIT_OK
    records = [json.loads(line) for line in eve.read_text().splitlines()]
    (exchange,) = [r for r in records if r["event_type"] == "http"]
    assert exchange["decrypted"]["keys"] == "keylog" and exchange["http"]["status"] == 200
    summary = capsys.readouterr().out
    assert "TLS" in summary and "decrypted" in summary and "key log secrets" in summary

    assert main(["analyze", str(tmp_path / "c.pcap"), "--eve", str(eve), "--no-rules"]) == EXIT_OK
    summary = capsys.readouterr().out
    assert "without keys" in summary


def test_unreadable_keylog_is_a_usage_error(tmp_path, capsys):
    write_pcap(tmp_path / "c.pcap", [(CLIENT, b"GET / HTTP/1.1\r\n\r\n")])
    assert main(["analyze", str(tmp_path / "c.pcap"), "--keylog", str(tmp_path / "nope.log"),
                 "--eve", str(tmp_path / "eve.json"), "--no-rules"]) == EXIT_USAGE
    assert "cannot read key log" in capsys.readouterr().err
