"""The `feast` layer: the Feast feature server's REST API and its gRPC services.

REST (`feast serve`, port 6566 by default; claimed by path, whatever the port). Routes are matched
on the path Starlette routes (:func:`inspector.protocols.webapi.routing_path`: percent-decoded,
`%2F` too; repeated slashes are not merged: Starlette answers `//push` 404), so
`/get%2Donline%2Dfeatures` is get_online_features; `feast.routed_path` keeps that path when the
one sent, read literally, is not the route, and an encoded unreserved character raises the
anomaly `feast_path_obfuscated`:

    POST /get-online-features        {features | feature_service, entities: {name: [keys]}}
    POST /retrieve-online-documents  {features | feature_service, query: [floats], top_k, query_string}
    POST /push                       {push_source_name, df: {column: [values]}, to}
    POST /write-to-online-store      {feature_view_name, df}
    POST /materialize                {start_ts, end_ts, feature_views}
    POST /materialize-incremental    {end_ts, feature_views}
    POST /read-document              {file_path}           (opens the path as given)
    POST /save-document              {file_path, data}
    GET  /health                     claimed only on port 6566: the path is too common

gRPC (claimed by path; requests decoded when their message is readable):
`/feast.serving.ServingService/GetOnlineFeatures` and `/GetFeastServingInfo`, and the Python
feature server's `GrpcFeatureServer` (`Push`, `WriteToOnlineStore`, `GetOnlineFeatures`,
`GetOnlineFeaturesRange`) under its proto package `grpc.connector` or `feast.serving`. Field
numbers are from feast's `protos/feast/serving/ServingService.proto` and `GrpcServer.proto`.

Shapes from feast `sdk/python/feast/feature_server.py`. Lists are capped at
:data:`LIST_ITEMS` names of :data:`NAME_CHARS` characters; the counts (`feature_count`,
`entity_count`, `row_count`) are always the full counts.
"""

from __future__ import annotations

import json
from typing import Any

from inspector.fields import declare
from inspector.protocols import webapi
from inspector.protocols.grpc import OBSERVATION_REQUEST, GrpcFramer
from inspector.protocols.protobuf import WIRE_LEN, WIRE_VARINT, ProtobufError, iter_fields
from inspector.protocols.webapi import integer, prune, text, text_list

LAYER = "feast"

LIST_ITEMS = 64
NAME_CHARS = 256
PATH_CHARS = 1024
ERROR_CHARS = 1024
#: feast serve's default port: the only one where a bare GET /health is taken for Feast.
DEFAULT_PORT = 6566

_REST = {
    "/get-online-features": "get_online_features",
    "/retrieve-online-documents": "retrieve_online_documents",
    "/push": "push",
    "/write-to-online-store": "write_to_online_store",
    "/materialize": "materialize",
    "/materialize-incremental": "materialize_incremental",
    "/read-document": "read_document",
    "/save-document": "save_document",
}
_GRPC_SERVICES = ("feast.serving.ServingService", "feast.serving.GrpcFeatureServer",
                  "grpc.connector.GrpcFeatureServer")
_GRPC_METHODS = {
    "GetOnlineFeatures": "get_online_features",
    "GetOnlineFeaturesRange": "get_online_features_range",
    "Push": "push",
    "WriteToOnlineStore": "write_to_online_store",
    "GetFeastServingInfo": "serving_info",
}


# --- REST -------------------------------------------------------------------------------------------


def _features(body: dict[str, Any], obj: dict[str, Any]) -> None:
    features = body.get("features")
    if isinstance(features, list):
        obj["features"] = text_list(features, LIST_ITEMS, NAME_CHARS)
        obj["feature_count"] = len(features)
    obj["feature_service"] = text(body.get("feature_service"), NAME_CHARS)


def _entities(entities: Any, obj: dict[str, Any]) -> None:
    if not isinstance(entities, dict):
        return
    obj["entities"] = [str(name)[:NAME_CHARS] for name in list(entities)[:LIST_ITEMS]]
    obj["entity_count"] = sum(len(keys) if isinstance(keys, list) else 1 for keys in entities.values())


def _frame(df: Any, obj: dict[str, Any]) -> None:
    if not isinstance(df, dict):
        return
    obj["columns"] = [str(name)[:NAME_CHARS] for name in list(df)[:LIST_ITEMS]]
    obj["row_count"] = max((len(v) if isinstance(v, list) else 1 for v in df.values()), default=0)


def _rest_request(api: str, body: dict[str, Any]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    if api in ("get_online_features", "retrieve_online_documents"):
        _features(body, obj)
        obj["full_feature_names"] = body.get("full_feature_names") if isinstance(
            body.get("full_feature_names"), bool) else None
    if api == "get_online_features":
        _entities(body.get("entities"), obj)
    elif api == "retrieve_online_documents":
        obj["top_k"] = integer(body.get("top_k"))
        query = body.get("query")
        obj["query_length"] = len(query) if isinstance(query, list) else None
        query_string = body.get("query_string")
        obj["query_string_length"] = len(query_string) if isinstance(query_string, str) else None
        obj["api_version"] = integer(body.get("api_version"))
    elif api in ("push", "write_to_online_store"):
        obj["push_source_name"] = text(body.get("push_source_name"), NAME_CHARS)
        obj["feature_view_name"] = text(body.get("feature_view_name"), NAME_CHARS)
        obj["to"] = text(body.get("to"), NAME_CHARS)
        _frame(body.get("df"), obj)
    elif api in ("materialize", "materialize_incremental"):
        obj["start_ts"] = text(body.get("start_ts"), NAME_CHARS)
        obj["end_ts"] = text(body.get("end_ts"), NAME_CHARS)
        obj["feature_views"] = text_list(body.get("feature_views"), LIST_ITEMS, NAME_CHARS)
    elif api in ("read_document", "save_document"):
        obj["file_path"] = text(body.get("file_path"), PATH_CHARS)
    return obj


def _rest_response(ctx: Any, api: str, obj: dict[str, Any]) -> None:
    response = ctx.exchange.response
    if response is None or not response.body:
        return
    value = webapi.read_json(response, ctx.anomaly, "feast_response", required=False)
    if isinstance(value, str) and response.status >= 400:  # feast answers str(exception) as JSON
        obj["error"] = value[:ERROR_CHARS]
        return
    if not isinstance(value, dict):
        return
    error = value.get("error", value.get("detail", value.get("message")))
    if error is not None:
        obj["error"] = (error if isinstance(error, str) else json.dumps(error))[:ERROR_CHARS]
    if api == "read_document" and isinstance(value.get("content"), str):
        obj["document_length"] = len(value["content"])
    results = value.get("results")
    if api in ("get_online_features", "retrieve_online_documents") and isinstance(results, list):
        obj["values_returned"] = sum(len(r["values"]) for r in results
                                     if isinstance(r, dict) and isinstance(r.get("values"), list))


# --- gRPC -------------------------------------------------------------------------------------------


def _first_message(ctx: Any) -> tuple[bytes, bool] | None:
    """(payload, truncated) of the first request message when it is readable."""
    framer = ctx.exchange.observations.get(OBSERVATION_REQUEST)
    if not isinstance(framer, GrpcFramer) or not framer.messages:
        return None
    message = framer.messages[0]
    return (message.payload, message.payload_truncated) if message.inspectable else None


class _Decoder:
    """Reads protobuf fields, keeping what precedes an error; reports one anomaly per message.

    A payload cut at the keep cap (`truncated`) ends mid-field by design: no anomaly then.
    """

    __slots__ = ("ctx", "reported", "truncated")

    def __init__(self, ctx: Any, truncated: bool) -> None:
        self.ctx = ctx
        self.truncated = truncated
        self.reported = False

    def fields(self, data: bytes) -> list[tuple[int, int, int | bytes]]:
        out: list[tuple[int, int, int | bytes]] = []
        try:
            for field in iter_fields(data):
                out.append(field)
        except ProtobufError as exc:
            if not self.truncated and not self.reported:
                self.reported = True
                self.ctx.anomaly("feast_protobuf_error", f"request message does not decode: {exc}")
        return out

    def map_entry(self, entry: bytes) -> tuple[str, bytes]:
        """(key, value bytes) of a map<string, message|string> entry."""
        key, value = "", b""
        for number, wire, data in self.fields(entry):
            if wire == WIRE_LEN and isinstance(data, bytes):
                if number == 1:
                    key = data.decode("utf-8", "replace")
                elif number == 2:
                    value = data
        return key, value


def _grpc_request(decoder: _Decoder, api: str, payload: bytes) -> dict[str, Any]:
    fields = decoder.fields(payload)
    obj: dict[str, Any] = {}
    if api == "get_online_features":
        features: list[str] = []
        feature_count = 0
        entities: list[str] = []
        entity_count = 0
        for number, wire, data in fields:
            if number == 1 and wire == WIRE_LEN and isinstance(data, bytes):
                obj["feature_service"] = data.decode("utf-8", "replace")[:NAME_CHARS]
            elif number == 2 and wire == WIRE_LEN and isinstance(data, bytes):
                for ref in decoder.fields(data):
                    if ref[0] == 1 and isinstance(ref[2], bytes):
                        feature_count += 1
                        if len(features) < LIST_ITEMS:
                            features.append(ref[2].decode("utf-8", "replace")[:NAME_CHARS])
            elif number == 3 and wire == WIRE_LEN and isinstance(data, bytes):
                name, values = decoder.map_entry(data)
                if len(entities) < LIST_ITEMS:
                    entities.append(name[:NAME_CHARS])
                entity_count += sum(1 for f in decoder.fields(values) if f[0] == 1)
            elif number == 4 and wire == WIRE_VARINT:
                obj["full_feature_names"] = bool(data)
        if feature_count:
            obj["features"], obj["feature_count"] = features, feature_count
        if entities:
            obj["entities"], obj["entity_count"] = entities, entity_count
    elif api in ("push", "write_to_online_store"):
        columns = []
        for number, wire, data in fields:
            if wire != WIRE_LEN or not isinstance(data, bytes):
                continue
            if number == 1:
                if len(columns) < LIST_ITEMS:
                    columns.append(decoder.map_entry(data)[0][:NAME_CHARS])
            elif number == 2:
                key = "push_source_name" if api == "push" else "feature_view_name"
                obj[key] = data.decode("utf-8", "replace")[:NAME_CHARS]
            elif number == 4 and api == "push":
                obj["to"] = data.decode("utf-8", "replace")[:NAME_CHARS]
        if columns:
            obj["columns"] = columns
    return obj


# --- the layer --------------------------------------------------------------------------------------


def _rest_api(path: str, _unquote: Any) -> str | None:
    return _REST.get(path)


def build(ctx: Any) -> dict[str, Any] | None:
    """The `feast` object of an exchange, or None when it is not a Feast call."""
    request = ctx.exchange.request
    if request is None or "s3" in ctx.record:  # an S3 call whatever its path (bucket `models`, ...)
        return None
    grpc = ctx.record.get("grpc")
    if isinstance(grpc, dict):
        service, method = grpc.get("service"), grpc.get("method")
        if service not in _GRPC_SERVICES:
            return None
        api = _GRPC_METHODS.get(method or "", "other")
        obj: dict[str, Any] = {"api": api, "transport": "grpc"}
        first = _first_message(ctx)
        if first is not None:
            payload, truncated = first
            obj.update(_grpc_request(_Decoder(ctx, truncated), api, payload))
        return prune(obj)
    # Starlette routes the decoded path; one that matches as sent has nothing to decode.
    api, path, hidden = webapi.route_request(ctx, _rest_api)
    if api is None:
        if path == "/health" and request.method == "GET" and ctx.record.get("dest_port") == DEFAULT_PORT:
            return {"api": "health", "transport": "rest"}
        return None
    if request.method != "POST":
        return None
    obj = {"api": api, "transport": "rest"}
    webapi.note_routing(ctx, LAYER, obj, path, hidden)
    body = webapi.json_object(webapi.read_json(request, ctx.anomaly, "feast_request"), ctx.anomaly,
                              "feast_request")
    if body is not None:
        obj.update(_rest_request(api, body))
    _rest_response(ctx, api, obj)
    return prune(obj)


declare(LAYER, [
    ("feast.api", "string", "Operation: get_online_features, retrieve_online_documents, push, "
     "write_to_online_store, materialize, materialize_incremental, read_document, save_document, health "
     "(gRPC: also get_online_features_range, serving_info, other)."),
    ("feast.transport", "string", "rest or grpc."),
    ("feast.routed_path", "string", "REST: the path the server routes (percent-decoded), "
     "present only when the path as sent (http.url), read literally, is not this route."),
    ("feast.features", "list[string]", f"Requested feature references `view:feature` (first {LIST_ITEMS})."),
    ("feast.feature_count", "integer", "Number of requested feature references."),
    ("feast.feature_service", "string", "Requested feature service."),
    ("feast.full_feature_names", "boolean", "full_feature_names requested."),
    ("feast.entities", "list[string]", f"Entity names of the lookup (first {LIST_ITEMS})."),
    ("feast.entity_count", "integer", "Total entity keys looked up (sum over entity names): bulk enumeration."),
    ("feast.push_source_name", "string", "Push source written by /push."),
    ("feast.feature_view_name", "string", "Feature view written by /write-to-online-store."),
    ("feast.to", "string", "Push destination: online, offline, online_and_offline."),
    ("feast.columns", "list[string]", f"Columns of the written data frame (first {LIST_ITEMS})."),
    ("feast.row_count", "integer", "Rows of the written data frame (longest column)."),
    ("feast.start_ts", "string", "Materialization start, as sent."),
    ("feast.end_ts", "string", "Materialization end, as sent."),
    ("feast.feature_views", "list[string]", "Feature views to materialize."),
    ("feast.top_k", "integer", "Documents requested from retrieve-online-documents."),
    ("feast.query_length", "integer", "Dimensions of the query vector."),
    ("feast.query_string_length", "integer", "Characters of the text query (api_version 2)."),
    ("feast.api_version", "integer", "retrieve-online-documents api_version."),
    ("feast.file_path", "string", f"Path given to /read-document or /save-document, as sent (first {PATH_CHARS} "
     "characters); /read-document opens it unchecked."),
    ("feast.document_length", "integer", "Characters of file content /read-document returned."),
    ("feast.values_returned", "integer", "Feature values in a get-online-features / documents response."),
    ("feast.error", "string", f"Error the server answered; first {ERROR_CHARS} characters."),
])
