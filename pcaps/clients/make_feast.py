"""Capture Feast feature-server traffic on loopback: REST with urllib, gRPC with grpcio.

Writes `feast.pcap` next to this script (or into `--out DIR`). No Feast client library is
installed here, so the calls are made as the Feast SDK and `curl` examples make them, with
urllib, against :class:`apisim_mlops.FeastHandler` (a protocol-shaped server on port 6566 when it
is free, not Feast): get-online-features (a normal lookup, a bulk one with 500 keys, one naming
a feature view that does not exist), retrieve-online-documents, push, write-to-online-store,
materialize, materialize-incremental, read-document (`/etc/passwd`), save-document, health, and
a request whose body is not JSON. Then gRPC with grpcio against a generic grpcio server:
`feast.serving.ServingService/GetOnlineFeatures` and `grpc.connector.GrpcFeatureServer/Push`
(messages encoded with inspector.protocols.protobuf, field numbers of feast's protos).

Usage: `python pcaps/clients/make_feast.py [--out DIR]` (root: tcpdump on lo).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from apisim import HERE, HOST, serve, tcpdump
from apisim_mlops import FeastHandler, grpc_call, grpc_server

from inspector.protocols.protobuf import encode_message

FEAST_PORT = 6566


def post(port: int, path: str, body: object) -> None:
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
    except urllib.error.HTTPError as error:
        error.read()


def rest_calls(port: int) -> None:
    post(port, "/get-online-features", {
        "features": ["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate"],
        "entities": {"driver_id": [1001, 1002]}, "full_feature_names": False})
    post(port, "/get-online-features", {"feature_service": "driver_activity_v1",
                                        "entities": {"driver_id": list(range(1000, 1500))}})
    post(port, "/get-online-features", {"features": ["missing_view:x"], "entities": {"driver_id": [1]}})
    post(port, "/retrieve-online-documents", {"features": ["city_embeddings:vector", "city_embeddings:state"],
                                              "query": [0.1, 0.2, 0.3, 0.4], "top_k": 3})
    post(port, "/push", {"push_source_name": "driver_stats_push_source", "to": "online_and_offline",
                         "df": {"driver_id": [1001, 1002, 1003], "conv_rate": [1.0, 1.0, 1.0],
                                "event_timestamp": ["2026-01-01 00:00:00"] * 3}})
    post(port, "/write-to-online-store", {"feature_view_name": "driver_hourly_stats",
                                          "df": {"driver_id": [1001], "acc_rate": [0.0]}})
    post(port, "/materialize", {"start_ts": "2026-01-01T00:00:00", "end_ts": "2026-01-02T00:00:00",
                                "feature_views": ["driver_hourly_stats"]})
    post(port, "/materialize-incremental", {"end_ts": "2026-01-02T00:00:00"})
    post(port, "/read-document", {"file_path": "/etc/passwd"})
    post(port, "/save-document", {"file_path": "../../root/.ssh/authorized_keys", "data": {"label": "x"}})
    with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=10) as answer:
        answer.read()
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    connection.request("POST", "/get-online-features", body=b'{"entities": {"driver_id": [1001,',
                       headers={"Content-Type": "application/json"})
    connection.getresponse().read()
    connection.close()


def _repeated_value(keys: list[int]) -> bytes:
    """feast.types.RepeatedValue {repeated Value val = 1}, Value {int64_val = 4}."""
    return encode_message([(1, encode_message([(4, key)])) for key in keys])


def grpc_calls(port: int) -> None:
    features = encode_message([(1, "driver_hourly_stats:conv_rate"), (1, "driver_hourly_stats:acc_rate")])
    entities = encode_message([(1, "driver_id"), (2, _repeated_value([1001, 1002, 1003]))])
    request = encode_message([(2, features), (3, entities), (4, 1)])
    grpc_call(port, "/feast.serving.ServingService/GetOnlineFeatures", request)
    push = encode_message([(1, encode_message([(1, "driver_id"), (2, "[1001]")])),
                           (1, encode_message([(1, "conv_rate"), (2, "[0.99]")])),
                           (2, "driver_stats_push_source"), (4, "online")])
    grpc_call(port, "/grpc.connector.GrpcFeatureServer/Push", push)


def make(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    pcap = out_dir / "feast.pcap"
    services = {"feast.serving.ServingService": ["GetOnlineFeatures"],
                "grpc.connector.GrpcFeatureServer": ["Push", "WriteToOnlineStore", "GetOnlineFeatures"]}
    with serve(FeastHandler, FEAST_PORT) as port, grpc_server(services) as grpc_port, \
            tcpdump(pcap, [port, grpc_port]):
        rest_calls(port)
        grpc_calls(grpc_port)
    return [pcap]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory for the pcaps (default: beside this script)")
    for path in make(parser.parse_args().out):
        print(f"{path} {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
