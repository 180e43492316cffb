"""Feast feature-server traffic (REST, `feast serve` on port 6566): lookups, pushes, documents.

Bodies are the ones the Python feature-server client posts; answers follow
`feast/feature_server.py` (get-online-features: metadata.feature_names + results[].values).
"""

from __future__ import annotations

from typing import Any

from inspector.lab.traffic_http import json_request, json_response

HOST = "feast:6566"


def get_online_features(entity: str, keys: list[int], features: list[str], *, host: str = HOST) -> bytes:
    return json_request("POST", "/get-online-features", host,
                        {"features": features, "entities": {entity: keys}, "full_feature_names": False})


def online_features_answer(entity: str, keys: list[int], features: list[str]) -> bytes:
    names = [entity] + [f.split(":", 1)[1] for f in features]
    results = [{"values": keys, "statuses": ["PRESENT"] * len(keys)}]
    results += [{"values": [0.5] * len(keys), "statuses": ["PRESENT"] * len(keys)} for _ in features]
    return json_response({"metadata": {"feature_names": names}, "results": results})


def push(source: str, frame: dict[str, list[Any]], *, to: str = "online", host: str = HOST) -> bytes:
    return json_request("POST", "/push", host, {"push_source_name": source, "df": frame, "to": to})


def write_to_online_store(view: str, frame: dict[str, list[Any]], *, host: str = HOST) -> bytes:
    return json_request("POST", "/write-to-online-store", host, {"feature_view_name": view, "df": frame})


def read_document(file_path: str, *, host: str = HOST) -> bytes:
    return json_request("POST", "/read-document", host, {"file_path": file_path})


def document_answer(content: str) -> bytes:
    return json_response({"content": content, "file_path": ""})


def empty_answer() -> bytes:
    return json_response(None)
