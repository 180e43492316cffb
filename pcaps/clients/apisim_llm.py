"""Protocol-shaped LLM servers for the loopback captures (not the real products).

* :class:`OpenAIHandler`: `/v1/chat/completions`, `/v1/completions`, `/v1/responses`,
  `/v1/embeddings`, `/v1/models`, with streaming as server-sent events and usage in the last
  chunk when `stream_options.include_usage` asks for it; enough of the OpenAI API for the
  `openai` Python client to parse every answer.
* :class:`TgiHandler`: Text Generation Inference's `/generate`, `/generate_stream` and `POST /`.
* :class:`TritonGenerateHandler`: Triton's generate extension, `/v2/models/{m}/generate[_stream]`.
* :class:`OllamaHandler`: Ollama's `/api/*` (generate and chat streaming JSON lines, pull / push
  / create / delete / copy / show / tags / blobs / version) and :class:`RegistryHandler`, an OCI
  registry serving one manifest, which `OllamaHandler` reads during `/api/pull` the way Ollama
  does (its User-Agent, its Accept header).
* :class:`MalformedLlmHandler`: answers that break the rules (event streams without data lines,
  chunks that are not JSON) for the anomaly captures.

Answers are deterministic (fixed ids, timestamps and texts) so two runs capture the same
transactions.
"""

from __future__ import annotations

import base64
import json
import struct
import urllib.request
from collections.abc import Iterator
from re import Match
from typing import Any

from apisim import ApiHandler

CREATED = 1767225600  # 2026-01-01T00:00:00Z
REPLY = "Paris is the capital of France."
REPLY_WORDS = ["Paris", " is", " the", " capital", " of", " France", "."]


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    words = sum(_tokens(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
    prompt = body.get("prompt") or body.get("input") or ""
    return words + (_tokens(prompt) if isinstance(prompt, str) else 0) + 4


def _sse(obj: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(obj)}\n\n".encode()


def _logprobs_content(words: list[str], top: int) -> dict[str, Any]:
    return {"content": [{"token": w, "logprob": -0.01 * (i + 1), "bytes": list(w.encode()),
                         "top_logprobs": [{"token": w, "logprob": -0.01 * (i + 1), "bytes": list(w.encode())}
                                          for _ in range(top)]}
                        for i, w in enumerate(words)], "refusal": None}


class OpenAIHandler(ApiHandler):
    routes = [
        ("POST", r"/v1/chat/completions", "chat"),
        ("POST", r"/v1/completions", "completions"),
        ("POST", r"/v1/responses", "responses_api"),
        ("POST", r"/v1/embeddings", "embeddings"),
        ("GET", r"/v1/models", "models"),
    ]

    def _model_or_404(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            self.send_json(400, {"error": {"message": "We could not parse the JSON body of your request.",
                                           "type": "invalid_request_error", "param": None, "code": None}})
            return None
        model = body.get("model", "")
        if model.startswith("missing"):
            self.send_json(404, {"error": {"message": f"The model `{model}` does not exist or you do not have "
                                           "access to it.", "type": "invalid_request_error", "param": None,
                                           "code": "model_not_found"}})
            return None
        return model

    def chat(self, match: Match[str]) -> None:
        body = self.json_body()
        model = self._model_or_404(body)
        if model is None:
            return
        n = int(body.get("n") or 1)
        top = int(body.get("top_logprobs") or 0)
        want_logprobs = bool(body.get("logprobs"))
        completion_tokens = len(REPLY_WORDS) * n
        usage = {"prompt_tokens": _prompt_tokens(body), "completion_tokens": completion_tokens,
                 "total_tokens": _prompt_tokens(body) + completion_tokens}
        base = {"id": "chatcmpl-apisim0001", "created": CREATED, "model": model, "system_fingerprint": "fp_apisim"}
        if not body.get("stream"):
            choices = [{"index": i, "message": {"role": "assistant", "content": REPLY, "refusal": None},
                        "logprobs": _logprobs_content(REPLY_WORDS, top) if want_logprobs else None,
                        "finish_reason": "stop"} for i in range(n)]
            self.send_json(200, {**base, "object": "chat.completion", "choices": choices, "usage": usage})
            return

        def chunks() -> Iterator[bytes]:
            chunk = {**base, "object": "chat.completion.chunk"}
            for i in range(n):
                yield _sse({**chunk, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}]})
                for word in REPLY_WORDS:
                    logprobs = _logprobs_content([word], top) if want_logprobs else None
                    yield _sse({**chunk, "choices": [{"index": i, "delta": {"content": word},
                                                      "logprobs": logprobs, "finish_reason": None}]})
                yield _sse({**chunk, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                                  "finish_reason": "stop"}]})
            options = body.get("stream_options") or {}
            if options.get("include_usage"):
                yield _sse({**chunk, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"

        self.send_chunked(200, "text/event-stream; charset=utf-8", chunks())

    def completions(self, match: Match[str]) -> None:
        body = self.json_body()
        model = self._model_or_404(body)
        if model is None:
            return
        prompt = body.get("prompt", "")
        text = (prompt if body.get("echo") and isinstance(prompt, str) else "") + " " + REPLY
        top = int(body.get("logprobs") or 0)
        logprobs = None
        if body.get("logprobs") is not None:
            words = text.split()
            logprobs = {"tokens": words, "token_logprobs": [-0.02] * len(words),
                        "top_logprobs": [{w: -0.02, **{f"{w}_{k}": -1.0 - k for k in range(top - 1)}} for w in words],
                        "text_offset": list(range(len(words)))}
        max_tokens = int(body.get("max_tokens") or 16)
        finish = "length" if max_tokens < len(REPLY_WORDS) else "stop"
        completion_tokens = min(max_tokens, len(REPLY_WORDS))
        n = int(body.get("n") or 1)
        usage = {"prompt_tokens": _prompt_tokens(body), "completion_tokens": completion_tokens * n,
                 "total_tokens": _prompt_tokens(body) + completion_tokens * n}
        choices = [{"index": i, "text": text, "logprobs": logprobs, "finish_reason": finish} for i in range(n)]
        self.send_json(200, {"id": "cmpl-apisim0002", "object": "text_completion", "created": CREATED,
                             "model": model, "choices": choices, "usage": usage})

    def responses_api(self, match: Match[str]) -> None:
        body = self.json_body()
        model = self._model_or_404(body)
        if model is None:
            return
        usage = {"input_tokens": _prompt_tokens(body), "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": len(REPLY_WORDS), "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": _prompt_tokens(body) + len(REPLY_WORDS)}
        message = {"id": "msg_apisim0003", "type": "message", "status": "completed", "role": "assistant",
                   "content": [{"type": "output_text", "text": REPLY, "annotations": []}]}
        response = {"id": "resp_apisim0003", "object": "response", "created_at": CREATED, "status": "completed",
                    "error": None, "incomplete_details": None, "instructions": body.get("instructions"),
                    "model": model, "output": [message], "parallel_tool_calls": True, "temperature": 1.0,
                    "tool_choice": "auto", "tools": [], "top_p": 1.0, "usage": usage}
        if not body.get("stream"):
            self.send_json(200, response)
            return

        def events() -> Iterator[bytes]:
            started = {**response, "status": "in_progress", "output": [], "usage": None}
            yield _sse({"type": "response.created", "sequence_number": 0, "response": started}, "response.created")
            seq = 1
            for word in REPLY_WORDS:
                yield _sse({"type": "response.output_text.delta", "sequence_number": seq, "item_id": message["id"],
                            "output_index": 0, "content_index": 0, "delta": word}, "response.output_text.delta")
                seq += 1
            yield _sse({"type": "response.completed", "sequence_number": seq, "response": response},
                       "response.completed")

        self.send_chunked(200, "text/event-stream; charset=utf-8", events())

    def embeddings(self, match: Match[str]) -> None:
        body = self.json_body()
        model = self._model_or_404(body)
        if model is None:
            return
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        dims = int(body.get("dimensions") or 8)
        data = []
        for index, _ in enumerate(inputs):
            vector = [round(0.125 * (index + 1) * (d + 1), 3) for d in range(dims)]
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_tokens(str(i)) for i in inputs)
        self.send_json(200, {"object": "list", "data": data, "model": model,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def models(self, match: Match[str]) -> None:
        self.send_json(200, {"object": "list", "data": [{"id": "apisim-chat", "object": "model",
                                                         "created": CREATED, "owned_by": "apisim"}]})


class TgiHandler(ApiHandler):
    routes = [
        ("POST", r"/generate", "generate"),
        ("POST", r"/generate_stream", "generate_stream"),
        ("POST", r"/", "compat"),
    ]

    def _details(self, body: dict[str, Any]) -> tuple[list[str], str]:
        params = body.get("parameters") or {}
        limit = int(params.get("max_new_tokens") or 20)
        words = REPLY_WORDS[:limit]
        return words, "length" if limit < len(REPLY_WORDS) else "eos_token"

    def generate(self, match: Match[str]) -> None:
        body = self.json_body()
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
            self.send_json(422, {"error": "Failed to deserialize the JSON body into the target type: "
                                 "missing field `inputs`", "error_type": "validation"})
            return
        words, finish = self._details(body)
        answer: dict[str, Any] = {"generated_text": "".join(words)}
        if (body.get("parameters") or {}).get("details"):
            answer["details"] = {"finish_reason": finish, "generated_tokens": len(words), "seed": None,
                                 "prefill": [], "tokens": [{"id": 100 + i, "text": w, "logprob": -0.1,
                                                            "special": False} for i, w in enumerate(words)]}
        self.send_json(200, answer)

    def generate_stream(self, match: Match[str]) -> None:
        body = self.json_body()
        words, finish = self._details(body)

        def events() -> Iterator[bytes]:
            for i, word in enumerate(words):
                last = i == len(words) - 1
                event = {"index": i + 1, "token": {"id": 100 + i, "text": word, "logprob": -0.1, "special": False},
                         "generated_text": "".join(words) if last else None,
                         "details": {"finish_reason": finish, "generated_tokens": len(words), "seed": None}
                         if last else None}
                yield b"data:" + json.dumps(event).encode() + b"\n\n"

        self.send_chunked(200, "text/event-stream", events())

    def compat(self, match: Match[str]) -> None:
        body = self.json_body()
        words, _ = self._details(body)
        self.send_json(200, [{"generated_text": "".join(words)}])


class TritonGenerateHandler(ApiHandler):
    routes = [
        ("POST", r"/v2/models/([^/]+)(?:/versions/([^/]+))?/generate", "generate"),
        ("POST", r"/v2/models/([^/]+)(?:/versions/([^/]+))?/generate_stream", "generate_stream"),
    ]

    def generate(self, match: Match[str]) -> None:
        self.json_body()
        self.send_json(200, {"model_name": match.group(1), "model_version": match.group(2) or "1",
                             "text_output": REPLY})

    def generate_stream(self, match: Match[str]) -> None:
        self.json_body()

        def events() -> Iterator[bytes]:
            for word in REPLY_WORDS:
                yield _sse({"model_name": match.group(1), "model_version": "1", "text_output": word})

        self.send_chunked(200, "text/event-stream", events())


# --- Ollama and an OCI registry ---------------------------------------------------------------------

OLLAMA_CREATED_AT = "2026-01-01T00:00:00.000000000Z"
OLLAMA_UA = "ollama/0.1.33 (amd64 linux) Go/go1.22.1"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
GOOD_DIGEST = "sha256:" + "6a0746a1ec1aef3e7ec53868f220ff6e389f6f8ef87a01d77c96807de94ca2aa"
CONFIG_DIGEST = "sha256:" + "4fa551d4f938f68b8c1e6afa9d28befb70e3f33f75d0753248d530364aeea40f"
#: The Probllama shape (CVE-2024-37032): a layer digest that is a path.
TRAVERSAL_DIGEST = "../../../../../../../../etc/ld.so.preload"


def registry_manifest(evil: bool) -> dict[str, Any]:
    layer_digest = TRAVERSAL_DIGEST if evil else GOOD_DIGEST
    return {"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": CONFIG_DIGEST,
                       "size": 485},
            "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": layer_digest,
                        "size": 1024},
                       {"mediaType": "application/vnd.ollama.image.template", "digest": GOOD_DIGEST, "size": 32}]}


class RegistryHandler(ApiHandler):
    """An OCI distribution registry with one repository: `library/{name}` answers its manifest."""

    routes = [
        ("GET", r"/v2/(.+)/manifests/([^/]+)", "manifest"),
        ("HEAD", r"/v2/(.+)/blobs/([^/]+)", "blob"),
    ]

    def manifest(self, match: Match[str]) -> None:
        evil = match.group(1).endswith("evil")
        self.send_json(200, registry_manifest(evil), MANIFEST_TYPE,
                       headers=[("Docker-Content-Digest", CONFIG_DIGEST)])

    def blob(self, match: Match[str]) -> None:
        self.send_bytes(200, b"", "application/octet-stream")


def _fetch_manifest(name: str) -> dict[str, Any] | None:
    """GET the manifest of `host:port/namespace/model:tag` like Ollama (plain HTTP: insecure)."""
    host, _, rest = name.partition("/")
    repository, _, tag = rest.partition(":")
    request = urllib.request.Request(f"http://{host}/v2/{repository}/manifests/{tag or 'latest'}",
                                     headers={"User-Agent": OLLAMA_UA, "Accept": MANIFEST_TYPE})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.loads(answer.read())


class OllamaHandler(ApiHandler):
    routes = [
        ("POST", r"/api/generate", "generate"),
        ("POST", r"/api/chat", "chat"),
        ("POST", r"/api/embed", "embed"),
        ("POST", r"/api/pull", "pull"),
        ("POST", r"/api/push", "push"),
        ("POST", r"/api/create", "create"),
        ("DELETE", r"/api/delete", "delete"),
        ("POST", r"/api/copy", "copy"),
        ("POST", r"/api/show", "show"),
        ("GET", r"/api/tags", "tags"),
        ("GET", r"/api/version", "version"),
        ("HEAD", r"/api/blobs/([^/]+)", "blob_head"),
        ("POST", r"/api/blobs/([^/]+)", "blob_upload"),
    ]

    def _final(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"done": True, "done_reason": "stop", "total_duration": 5_000_000, "load_duration": 1_000_000,
                "prompt_eval_count": _prompt_tokens(body), "prompt_eval_duration": 1_000_000,
                "eval_count": len(REPLY_WORDS), "eval_duration": 2_000_000}

    def _lines(self, objects: list[dict[str, Any]]) -> Iterator[bytes]:
        for obj in objects:
            yield json.dumps(obj).encode() + b"\n"

    def generate(self, match: Match[str]) -> None:
        body = self.json_body()
        base = {"model": body.get("model"), "created_at": OLLAMA_CREATED_AT}
        if body.get("stream") is False:
            self.send_json(200, {**base, "response": REPLY, **self._final(body)}, "application/json; charset=utf-8")
            return
        parts = [{**base, "response": w, "done": False} for w in REPLY_WORDS]
        parts.append({**base, "response": "", **self._final(body)})
        self.send_chunked(200, "application/x-ndjson", self._lines(parts))

    def chat(self, match: Match[str]) -> None:
        body = self.json_body()
        base = {"model": body.get("model"), "created_at": OLLAMA_CREATED_AT}
        if body.get("stream") is False:
            self.send_json(200, {**base, "message": {"role": "assistant", "content": REPLY}, **self._final(body)},
                           "application/json; charset=utf-8")
            return
        parts = [{**base, "message": {"role": "assistant", "content": w}, "done": False} for w in REPLY_WORDS]
        parts.append({**base, "message": {"role": "assistant", "content": ""}, **self._final(body)})
        self.send_chunked(200, "application/x-ndjson", self._lines(parts))

    def embed(self, match: Match[str]) -> None:
        body = self.json_body()
        inputs = body.get("input")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        self.send_json(200, {"model": body.get("model"),
                             "embeddings": [[0.25, 0.5, 0.75, 1.0] for _ in inputs]}, "application/json; charset=utf-8")

    def pull(self, match: Match[str]) -> None:
        body = self.json_body()
        name = body.get("model") or body.get("name") or ""
        lines: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        if name.count("/") >= 2 and body.get("insecure"):
            manifest = _fetch_manifest(name)
            for layer in (manifest or {}).get("layers", []):
                digest = layer.get("digest", "")
                if not digest.startswith("sha256:"):
                    lines.append({"error": f"invalid digest format: {digest}"})
                    break
                lines.append({"status": f"pulling {digest[7:19]}", "digest": digest,
                              "total": layer.get("size"), "completed": layer.get("size")})
            else:
                lines += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"},
                          {"status": "success"}]
        else:
            lines += [{"status": f"pulling {GOOD_DIGEST[7:19]}", "digest": GOOD_DIGEST, "total": 1024,
                       "completed": 1024}, {"status": "verifying sha256 digest"}, {"status": "writing manifest"},
                      {"status": "success"}]
        if body.get("stream") is False:
            self.send_json(200, lines[-1])
            return
        self.send_chunked(200, "application/x-ndjson", self._lines(lines))

    def push(self, match: Match[str]) -> None:
        body = self.json_body()
        lines = [{"status": "retrieving manifest"},
                 {"status": "starting upload", "digest": GOOD_DIGEST, "total": 1024},
                 {"status": "pushing manifest"}, {"status": "success"}]
        if body.get("stream") is False:
            self.send_json(200, lines[-1])
            return
        self.send_chunked(200, "application/x-ndjson", self._lines(lines))

    def create(self, match: Match[str]) -> None:
        self.json_body()
        lines = [{"status": "reading model metadata"}, {"status": "creating system layer"},
                 {"status": "writing manifest"}, {"status": "success"}]
        self.send_chunked(200, "application/x-ndjson", self._lines(lines))

    def delete(self, match: Match[str]) -> None:
        body = self.json_body()
        if str(body.get("model") or body.get("name")).startswith("missing"):
            self.send_json(404, {"error": f"model '{body.get('model')}' not found"})
            return
        self.send_bytes(200, b"", None)

    def copy(self, match: Match[str]) -> None:
        self.json_body()
        self.send_bytes(200, b"", None)

    def show(self, match: Match[str]) -> None:
        body = self.json_body()
        self.send_json(200, {"modelfile": f"FROM {body.get('model')}\n", "parameters": "stop \"<|eot_id|>\"",
                             "template": "{{ .Prompt }}", "details": {"format": "gguf", "family": "llama"}})

    def tags(self, match: Match[str]) -> None:
        self.send_json(200, {"models": [{"name": "llama3:latest", "model": "llama3:latest",
                                         "modified_at": OLLAMA_CREATED_AT, "size": 1024, "digest": GOOD_DIGEST[7:]}]})

    def version(self, match: Match[str]) -> None:
        self.send_json(200, {"version": "0.1.33"})

    def blob_head(self, match: Match[str]) -> None:
        self.send_bytes(404 if match.group(1) != GOOD_DIGEST else 200, b"", None)

    def blob_upload(self, match: Match[str]) -> None:
        self.read_body()
        self.send_bytes(201, b"", None)


class MalformedLlmHandler(ApiHandler):
    """Answers that break the wire rules, for the anomaly capture."""

    routes = [
        ("POST", r"/v1/chat/completions", "chat"),
        ("POST", r"/v1/completions", "completions"),
    ]

    def chat(self, match: Match[str]) -> None:
        body = self.json_body()
        if not isinstance(body, dict):
            self.send_json(400, {"error": {"message": "We could not parse the JSON body of your request.",
                                           "type": "invalid_request_error"}})
            return
        if body.get("model") == "no-data":  # an event stream with comments and no data line
            self.send_chunked(200, "text/event-stream", [b": keep-alive\n\n", b"event: ping\n\n", b": bye\n\n"])
            return
        # chunks that are not JSON between good ones
        self.send_chunked(200, "text/event-stream", [
            _sse({"id": "x", "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}),
            b"data: {\"id\": \"x\", \"choices\": [\n\n",
            b"data: not json at all\n\n",
            _sse({"id": "x", "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            b"data: [DONE]\n\n"])

    def completions(self, match: Match[str]) -> None:
        self.read_body()
        self.send_bytes(200, b'{"id": "cmpl-cut", "choices": [{"text": "unfinished', "application/json")
