"""What an LLM server answered: finish reasons, token usage, generated-text length, errors.

Used by the `llm` layer (inspector.protocols.llm) on the response of a call it claimed. Three
body shapes: a whole JSON answer, server-sent events (`text/event-stream`: OpenAI chat,
completions and Responses streaming, TGI `generate_stream`, Triton `generate_stream`), and JSON
lines (`application/x-ndjson`: Ollama streaming). Stream chunks are parsed together in one
`json.loads` of a JSON array when they allow it (one C-level parse for a whole stream), one by
one otherwise. Malformed answers are reported through `report(event, message)`, never raised.
"""

from __future__ import annotations

import json
from typing import Any

from inspector import jsonio
from inspector.http import HttpMessage
from inspector.protocols import webapi
from inspector.protocols.webapi import Report, integer, prune

#: Characters kept of an error message.
ERROR_CHARS = 1024
#: Items kept in the name lists (roles, tool names, finish reasons, logits processors).
LIST_ITEMS = 32
NAME_CHARS = 128
#: SSE events / NDJSON lines whose JSON is parsed per response (the body is capped anyway).
MAX_STREAM_EVENTS = 50_000


class _Summary:
    """What a response says: finish reasons, usage, text length, error; fed JSON objects."""

    __slots__ = ("chunks", "complete", "completion_tokens", "dims", "embeddings", "error", "finish",
                 "prompt_tokens", "text_length", "total_tokens")

    def __init__(self) -> None:
        self.finish: list[str] = []
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.total_tokens: int | None = None
        self.text_length = 0
        self.error: str | None = None
        self.chunks: int | None = None
        self.complete: bool | None = None
        self.embeddings: int | None = None
        self.dims: int | None = None

    def reason(self, value: Any) -> None:
        if isinstance(value, str) and value and len(self.finish) < LIST_ITEMS:
            self.finish.append(value[:NAME_CHARS])

    def usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        prompt = integer(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = integer(usage.get("completion_tokens", usage.get("output_tokens")))
        total = integer(usage.get("total_tokens"))
        self.prompt_tokens = prompt if prompt is not None else self.prompt_tokens
        self.completion_tokens = completion if completion is not None else self.completion_tokens
        self.total_tokens = total if total is not None else self.total_tokens

    def error_from(self, obj: dict[str, Any]) -> None:
        if "error" not in obj and "detail" not in obj and "message" not in obj:
            return
        error = obj.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        if error is None and isinstance(obj.get("detail"), str | list):
            error = obj["detail"]
        if error is None and obj.get("object") == "error":
            error = obj.get("message")
        if error is not None and not isinstance(error, str):
            error = json.dumps(error)[:ERROR_CHARS]
        if isinstance(error, str) and error:
            self.error = error[:ERROR_CHARS]

    def feed(self, dialect: str, obj: Any, *, streamed: bool) -> None:
        """One response object (a whole JSON response, an SSE chunk or an NDJSON line)."""
        if isinstance(obj, list):  # TGI compat route: [{"generated_text": ...}]
            for item in obj[:LIST_ITEMS]:
                self.feed(dialect, item, streamed=streamed)
            return
        if not isinstance(obj, dict):
            return
        self.error_from(obj)
        if dialect == "openai":
            self._openai(obj, streamed=streamed)
        elif dialect == "tgi":
            self._tgi(obj, streamed=streamed)
        elif dialect == "triton":
            output = obj.get("text_output")
            self.text_length += len(output) if isinstance(output, str) else 0
        else:
            self._ollama(obj)

    def _openai(self, obj: dict[str, Any], *, streamed: bool) -> None:
        choices = obj.get("choices")
        if isinstance(choices, list):  # chat/completions, whole or a stream chunk: the common case
            self._choices(choices, streamed=streamed)
            self.usage(obj.get("usage"))
            return
        kind = obj.get("type")
        if isinstance(kind, str) and kind.startswith("response."):  # Responses API stream event
            if kind == "response.output_text.delta" and isinstance(obj.get("delta"), str):
                self.text_length += len(obj["delta"])
            inner = obj.get("response")
            if isinstance(inner, dict) and kind in ("response.completed", "response.incomplete",
                                                    "response.failed"):
                self.complete = True
                self._responses(inner, count_text=False)
            return
        if obj.get("object") == "response":
            self._responses(obj, count_text=True)
            return
        self.usage(obj.get("usage"))
        data = obj.get("data")
        if obj.get("object") == "list" and isinstance(data, list):  # embeddings
            self.embeddings = len(data)
            first = data[0] if data and isinstance(data[0], dict) else {}
            vector = first.get("embedding")
            if isinstance(vector, list):
                self.dims = len(vector)
            elif isinstance(vector, str):  # base64 float32
                padding = len(vector) - len(vector.rstrip("="))
                self.dims = (len(vector) * 3 // 4 - padding) // 4
            return

    def _choices(self, choices: list[Any], *, streamed: bool) -> None:
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            reason = choice.get("finish_reason")
            if reason is not None:
                self.reason(reason)
            holder = choice.get("delta") if streamed else choice.get("message")
            content = holder.get("content") if isinstance(holder, dict) else None
            if content is None:
                content = choice.get("text")
            if isinstance(content, str):
                self.text_length += len(content)

    def _responses(self, obj: dict[str, Any], *, count_text: bool) -> None:
        self.usage(obj.get("usage"))
        details = obj.get("incomplete_details")
        if isinstance(details, dict) and details.get("reason"):
            self.reason(details.get("reason"))
        else:
            self.reason(obj.get("status"))
        if not count_text or not isinstance(obj.get("output"), list):
            return
        for item in obj["output"]:
            if isinstance(item, dict) and isinstance(item.get("content"), list):
                for part in item["content"]:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        self.text_length += len(part["text"])

    def _tgi(self, obj: dict[str, Any], *, streamed: bool) -> None:
        token = obj.get("token")
        if streamed and isinstance(token, dict):
            if isinstance(token.get("text"), str) and not token.get("special"):
                self.text_length += len(token["text"])
        elif isinstance(obj.get("generated_text"), str):
            self.text_length += len(obj["generated_text"])
        details = obj.get("details")
        if isinstance(details, dict):
            self.reason(details.get("finish_reason"))
            generated = integer(details.get("generated_tokens"))
            if generated is not None:
                self.completion_tokens = generated
            if streamed:
                self.complete = True

    def _ollama(self, obj: dict[str, Any]) -> None:
        message = obj.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            self.text_length += len(message["content"])
        elif isinstance(obj.get("response"), str):
            self.text_length += len(obj["response"])
        embeddings = obj.get("embeddings")
        if isinstance(embeddings, list):
            self.embeddings = len(embeddings)
            if embeddings and isinstance(embeddings[0], list):
                self.dims = len(embeddings[0])
        elif isinstance(obj.get("embedding"), list):
            self.embeddings, self.dims = 1, len(obj["embedding"])
        if obj.get("done") is True:
            self.complete = True
            self.reason(obj.get("done_reason"))
            prompt = integer(obj.get("prompt_eval_count"))
            completion = integer(obj.get("eval_count"))
            if prompt is not None:
                self.prompt_tokens = prompt
            if completion is not None:
                self.completion_tokens = completion
            if prompt is not None and completion is not None:
                self.total_tokens = prompt + completion
        elif "done" in obj and self.complete is None:
            self.complete = False
        prompt = integer(obj.get("prompt_eval_count"))
        if prompt is not None and self.prompt_tokens is None:
            self.prompt_tokens = prompt

    def object(self) -> dict[str, Any]:
        usage = prune({"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                       "total_tokens": self.total_tokens})
        return {
            "finish_reasons": self.finish or None,
            "usage": usage or None,
            "response_length": self.text_length,
            "stream_chunks": self.chunks,
            "stream_complete": self.complete if self.chunks is not None else None,
            "embedding_count": self.embeddings,
            "embedding_dimensions": self.dims,
            "error": self.error,
        }


_BAD = object()


def _decode_all(payloads: list[str]) -> list[Any]:
    """Each payload's JSON value (`_BAD` where it is not JSON).

    All at once as one JSON array when that parses to one value per payload (one C-level parse
    for a whole stream); one by one otherwise.
    """
    if not payloads:
        return []
    try:
        values = jsonio.loads("[" + ",".join(payloads) + "]")
        if len(values) == len(payloads):
            return values
    except (ValueError, RecursionError):
        pass
    decoded = []
    for payload in payloads:
        try:
            decoded.append(jsonio.loads(payload))
        except (ValueError, RecursionError):
            decoded.append(_BAD)
    return decoded


def summarize(report: Report, dialect: str, response: HttpMessage) -> dict[str, Any]:
    """The answer fields of the `llm` object for `response` (see inspector.protocols.llm)."""
    summary = _Summary()
    if webapi.is_event_stream(response):
        events, _ = webapi.sse_events(response.body)
        summary.chunks = 0
        summary.complete = False
        if response.body.strip() and not events:
            report("llm_sse_without_data", f"event stream of {len(response.body)} bytes carries no data lines")
        payloads = [(name, data) for name, data in events[:MAX_STREAM_EVENTS] if data.strip() != "[DONE]"]
        summary.complete = len(payloads) < min(len(events), MAX_STREAM_EVENTS)
        summary.chunks = len(payloads)
        bad = 0
        for name, chunk in zip((name for name, _ in payloads), _decode_all([data for _, data in payloads])):
            if chunk is _BAD:
                bad += 1
                continue
            if name == "error" and isinstance(chunk, dict) and "error" not in chunk:
                chunk = {"error": chunk.get("message", chunk)}
            summary.feed(dialect, chunk, streamed=True)
        if bad:
            report("llm_sse_invalid_json", f"{bad} of {summary.chunks} event-stream data chunks are not JSON")
        if dialect == "triton" and summary.chunks:  # Triton sends no end marker: the body's end is it
            summary.complete = response.complete and not response.body_truncated
    elif webapi.is_ndjson(response):
        values, bad = webapi.ndjson_values(response.body)
        summary.chunks = len(values)
        summary.complete = False
        for value in values[:MAX_STREAM_EVENTS]:
            summary.feed(dialect, value, streamed=True)
        if bad and not (bad == 1 and (response.body_truncated or not response.complete)):
            report("llm_ndjson_invalid_line", f"{bad} lines of the JSON-lines response are not JSON")
    else:
        value = webapi.read_json(response, report, "llm_response", required=False)
        summary.feed(dialect, value, streamed=False)
    return summary.object()
