"""Parity: the traffic the sidecar forwarded, captured on its cleartext upstream leg with tcpdump
and analyzed offline, raises the same alerts (same sids, same counts) as the live run.

One sidecar process serves two routes: gRPC to an h2c upstream and REST to an HTTP/1 upstream.
The rules only alert (blocked requests never reach the upstream leg) and look at request and
response fields, unary calls and a bidirectional stream.
"""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import time
from collections import Counter

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from live_sidecar import Sidecar, free_port, wait_for, write_rule

from inspector.analyze import Analyzer
from inspector.engine import Engine
from inspector.rules import load_rules

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed")

RULES = [
    (9500001, "grpc", {"grpc.method": "ModelInfer"}),
    (9500002, "grpc", {"grpc.status": 0}),
    (9500003, "http", {"http.url|endswith": "/infer"}),
    (9500004, "http", {"http.status": 200}),
    (9500005, "grpc", {"grpc.method": "ModelStreamInfer"}),
    (9500006, "grpc", {"grpc.request.messages|gte": 2}),
    (9500007, "grpc", {"grpc.encoding": "gzip"}),
]


def _grpc_inputs(n: int) -> list:
    inputs = [grpcclient.InferInput("INPUT0", [1, n], "INT32"), grpcclient.InferInput("INPUT1", [1, n], "INT32")]
    inputs[0].set_data_from_numpy(np.arange(n, dtype=np.int32).reshape(1, n))
    inputs[1].set_data_from_numpy(np.ones((1, n), dtype=np.int32))
    return inputs


def _rest_inputs(binary: bool) -> list:
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(np.arange(16, dtype=np.int32).reshape(1, 16), binary_data=binary)
    inputs[1].set_data_from_numpy(np.ones((1, 16), dtype=np.int32), binary_data=binary)
    return inputs


def test_live_alerts_equal_offline_alerts(grpc_upstream, rest_upstream, certs, tmp_path):
    grpc_port, _ = grpc_upstream
    rules = tmp_path / "rules"
    rules.mkdir()
    for sid, event, selection in RULES:
        write_rule(rules, sid, f"parity {sid}", event, selection)
    pcap = tmp_path / "upstream.pcap"
    capture = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-s", "0", "-w", str(pcap),
                                f"tcp port {grpc_port} or tcp port {rest_upstream.port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: _listening(capture), timeout=10)
        rest_listen = free_port()
        sidecar = Sidecar(tmp_path, f"h2c://127.0.0.1:{grpc_port}", rules, cert=certs.server_cert,
                          key=certs.server_key,
                          args=["--upstream", f"http://127.0.0.1:{rest_upstream.port}",
                                "--listen", f"127.0.0.1:{rest_listen}"])
        with sidecar:
            grpc_client = grpcclient.InferenceServerClient(f"localhost:{sidecar.port}", ssl=True,
                                                           root_certificates=str(certs.ca))
            assert grpc_client.is_server_live()
            grpc_client.infer("simple", _grpc_inputs(16))
            grpc_client.infer("simple", _grpc_inputs(16), compression_algorithm="gzip")
            grpc_client.get_model_metadata("simple")
            results: queue.Queue = queue.Queue()
            grpc_client.start_stream(callback=lambda result, error: results.put((result, error)))
            for i in range(3):
                grpc_client.async_stream_infer("simple", _grpc_inputs(16), request_id=str(i))
                assert results.get(timeout=10)[1] is None
            grpc_client.stop_stream()
            grpc_client.close()
            rest_client = httpclient.InferenceServerClient(f"localhost:{rest_listen}", ssl=True,
                                                           ssl_options={"ca_certs": str(certs.ca)})
            assert rest_client.is_server_live()
            rest_client.infer("simple", _rest_inputs(False))
            rest_client.infer("simple", _rest_inputs(True))
            rest_client.close()
            time.sleep(1.0)  # the last records reach the file (flushed every 0.5 s)
        live = Counter(r["alert"]["signature_id"] for r in sidecar.alerts())
    finally:
        time.sleep(0.3)
        capture.send_signal(signal.SIGINT)
        capture.wait(10)
    ruleset = load_rules([rules])
    offline_records: list = []
    analyzer = Analyzer(offline_records.append, engine=Engine(ruleset))
    analyzer.analyze_file(pcap)
    offline = Counter(r["alert"]["signature_id"] for r in offline_records if r["event_type"] == "alert")
    print("live:", dict(sorted(live.items())), "offline:", dict(sorted(offline.items())))
    assert live[9500006] == 1 and live[9500005] == 1  # the stream: one transaction, one alert each
    assert live[9500003] == 2 and live[9500001] == 2
    assert live == offline


def _listening(capture: subprocess.Popen) -> bool:
    import os
    import select

    assert capture.stderr is not None
    if capture.poll() is not None:
        raise AssertionError(f"tcpdump exited: {capture.stderr.read().decode()}")
    ready, _, _ = select.select([capture.stderr], [], [], 0.1)
    if not ready:
        return False
    line = os.read(capture.stderr.fileno(), 4096)
    return b"listening on" in line
