"""The `llm` layer: text-generation and embedding calls to LLM servers, whatever their dialect.

Claimed by path (POST only), then read from the JSON body:

    dialect  path                                        api
    openai   .../chat/completions                        chat_completions
             .../completions                             completions
             .../responses                               responses
             .../embeddings                              embeddings
    tgi      /generate, /generate_stream                 generate, generate_stream
             / and /invocations with "inputs"            generate (generate_stream when stream)
    triton   /v2/models/{m}[/versions/{v}]/generate      generate, generate_stream
    ollama   /api/generate, /api/chat, /api/embed[dings] generate, chat, embeddings

OpenAI paths are matched by suffix, so vLLM, TGI's OpenAI routes, LiteLLM, Azure
(`/openai/deployments/{d}/chat/completions`) and gateways with a prefix are all seen;
`/invocations` (SageMaker) is read by its body keys. Ollama and Triton generate calls also get an
`ollama` / `triton` object from their own layers: the record then carries both, and its
event_type is `llm` (the last layer that claims it), so `event: ollama` and `event: triton` rules
still see it through the layer dispatch.

The prompt is the text the model is asked to continue: chat messages joined one per line as
`role: text` (text parts of multi-part contents only), a completion prompt, the Responses
API's `instructions` and `input`, embedding inputs. `llm.prompt` keeps the first
:data:`PROMPT_CHARS` characters and `llm.prompt_length` counts them all. `llm.user_prompt` is
the part the user controls, kept and capped on its own so a long system prompt cannot push it
out of sight: the turns other than system, developer and assistant ones (user messages, tool
and function results) and role-less prompt text, whole up to 4096 characters, else its first
:data:`USER_HEAD_CHARS` and last :data:`USER_TAIL_CHARS` characters (the latest turn is last).
Injection rules match it. Responses are
summarized by inspector.protocols.llm_answers (finish reasons, token usage, length of the
generated text) from JSON, from server-sent events (`text/event-stream`: OpenAI, TGI and Triton
streaming) or from newline-delimited JSON (Ollama streaming). API keys never reach this object:
nothing is copied from headers, and body keys other than the ones named here are ignored.

Sampling and extraction parameters are read the way pydantic-"lax" servers read them ("2" is 2),
so a value sent as a string cannot slip past a numeric rule.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from inspector.fields import declare
from inspector.protocols import webapi
from inspector.protocols.llm_answers import ERROR_CHARS, LIST_ITEMS, NAME_CHARS, summarize
from inspector.protocols.webapi import boolean, integer, number, prune, text

LAYER = "llm"

#: Characters of prompt text kept in `llm.prompt`.
PROMPT_CHARS = 4096
#: `llm.user_prompt` keeps at most this many characters of the user-controlled text: the head and
#: the tail when it is longer (the latest turn is last; an injection may open or close a message).
USER_HEAD_CHARS = 1024
USER_TAIL_CHARS = 3072
#: Joins the head and the tail of a cut `llm.user_prompt`: neither a word nor a space, so no
#: phrase a rule looks for runs across the cut.
CUT_MARK = " … "
#: Roles whose text the operator or the model wrote, not the user: left out of `llm.user_prompt`.
NOT_USER_ROLES = frozenset({"system", "developer", "assistant"})
#: Characters kept of a per-request chat template.
TEMPLATE_CHARS = 1024

_TRITON_GENERATE = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/(generate|generate_stream)")
_OPENAI_SUFFIXES = (
    ("/chat/completions", "chat_completions"),
    ("/completions", "completions"),
    ("/responses", "responses"),
    ("/embeddings", "embeddings"),
)
_OLLAMA_PATHS = {
    "/api/generate": "generate",
    "/api/chat": "chat",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
}
_TGI_PATHS = {"/generate": "generate", "/generate_stream": "generate_stream"}
_BODY_DISPATCHED = frozenset({"/", "/invocations"})

_MAX_TOKENS_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens", "max_new_tokens")


def _route(path: str, unquote: Callable[[str], str] = webapi.unquote_path) -> tuple[str, str, str | None] | None:
    """(dialect, api, model from the path) for a POST path, or None when it is no LLM route
    (`unquote` decodes a path segment: not again on a routing path, already decoded)."""
    api = _OLLAMA_PATHS.get(path)
    if api is not None:
        return "ollama", api, None
    api = _TGI_PATHS.get(path)
    if api is not None:
        return "tgi", api, None
    if path.startswith("/v2/models/"):
        match = _TRITON_GENERATE.fullmatch(path)
        if match is None:
            return None
        return "triton", match.group(3), unquote(match.group(1))
    for suffix, api in _OPENAI_SUFFIXES:
        if path.endswith(suffix):
            return "openai", api, None
    return None


def _body_route(body: dict[str, Any]) -> tuple[str, str] | None:
    """(dialect, api) of a POST to `/` or `/invocations`, from the body's keys."""
    if "messages" in body:
        return "openai", "chat_completions"
    if "prompt" in body:
        return "openai", "completions"
    if "inputs" in body:
        return "tgi", "generate_stream" if body.get("stream") is True else "generate"
    return None


# --- prompt text ----------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "\n".join(parts)
    return ""


def _prompt_input(value: Any) -> tuple[list[str], int, int]:
    """(texts, input count, token ids sent) of a completion prompt / embedding input.

    A string is one input; a list of strings or of token-id lists is one input per item; a flat
    list of token ids is one input.
    """
    if isinstance(value, str):
        return [value], 1, 0
    if not isinstance(value, list):
        return [], 0, 0
    texts: list[str] = []
    token_ids = 0
    flat_ids = True
    for item in value:
        if isinstance(item, str):
            texts.append(item)
            flat_ids = False
        elif isinstance(item, int) and not isinstance(item, bool):
            token_ids += 1
        else:
            flat_ids = False
            if isinstance(item, list):
                token_ids += sum(1 for t in item if isinstance(t, int) and not isinstance(t, bool))
    count = (1 if value else 0) if flat_ids else len(value)
    return texts, count, token_ids


class _Prompt:
    """Builds the prompt text and the message facts of one request."""

    __slots__ = ("input_count", "lines", "message_count", "roles", "token_ids", "user_lines")

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.user_lines: list[str] = []
        self.roles: list[str] = []
        self.message_count: int | None = None
        self.input_count: int | None = None
        self.token_ids = 0

    def add(self, role: str | None, content: str) -> None:
        if role is not None:
            role = role[:NAME_CHARS]
            if role not in self.roles and len(self.roles) < LIST_ITEMS:
                self.roles.append(role)
            line = f"{role}: {content}"
            if role.lower() not in NOT_USER_ROLES:
                self.user_lines.append(line)
        else:
            line = content  # completion prompts, inputs: the client wrote all of it
            self.user_lines.append(line)
        self.lines.append(line)

    def messages(self, messages: Any) -> None:
        if not isinstance(messages, list):
            return
        self.message_count = (self.message_count or 0) + len(messages)
        for message in messages:
            if isinstance(message, dict):
                role = message.get("role")
                content = message.get("content")
                if message.get("type") == "function_call_output":  # Responses API tool result
                    role, content = "tool", message.get("output")
                if isinstance(role, str):
                    self.add(role, _content_text(content))
            elif isinstance(message, str):
                self.add("user", message)

    def plain(self, value: Any) -> None:
        texts, count, token_ids = _prompt_input(value)
        for item in texts:
            self.add(None, item)
        self.input_count = count
        self.token_ids += token_ids

    def object(self) -> dict[str, Any]:
        full = "\n".join(self.lines)
        user = "\n".join(self.user_lines)
        return {
            "prompt": full[:PROMPT_CHARS],
            "prompt_length": len(full),
            "user_prompt": head_and_tail(user) if self.user_lines else None,
            "user_prompt_length": len(user) if self.user_lines else None,
            "message_count": self.message_count,
            "input_count": self.input_count,
            "prompt_token_ids": self.token_ids or None,
            "roles": self.roles or None,
            "has_system_prompt": any(r in ("system", "developer") for r in self.roles),
        }


def head_and_tail(text: str) -> str:
    """`text` when it fits `llm.user_prompt`, else its first and last characters around CUT_MARK."""
    if len(text) <= USER_HEAD_CHARS + USER_TAIL_CHARS:
        return text
    return text[:USER_HEAD_CHARS] + CUT_MARK + text[-USER_TAIL_CHARS:]


def _prompt(dialect: str, api: str, body: dict[str, Any]) -> _Prompt:
    prompt = _Prompt()
    if dialect == "ollama":
        if isinstance(body.get("system"), str) and body["system"]:
            prompt.add("system", body["system"])
        if api == "chat":
            prompt.messages(body.get("messages"))
        elif api == "generate":
            if isinstance(body.get("prompt"), str):
                prompt.add("user" if prompt.roles else None, body["prompt"])
        else:
            prompt.plain(body.get("input", body.get("prompt")))
    elif dialect == "triton":
        prompt.plain(body.get("text_input"))
    elif dialect == "tgi":
        prompt.plain(body.get("inputs"))
    elif api == "chat_completions":
        prompt.messages(body.get("messages"))
    elif api == "responses":
        if isinstance(body.get("instructions"), str):
            prompt.add("system", body["instructions"])
        value = body.get("input")
        if isinstance(value, str):
            prompt.add("user", value)
            prompt.message_count = 1
        else:
            prompt.messages(value)
    elif api == "completions":
        prompt.plain(body.get("prompt"))
        if isinstance(body.get("suffix"), str):
            prompt.add(None, body["suffix"])
    else:  # embeddings
        prompt.plain(body.get("input"))
    return prompt


# --- request parameters ---------------------------------------------------------------------------


def _tools(body: dict[str, Any]) -> tuple[int | None, list[str] | None]:
    tools = body.get("tools")
    functions = body.get("functions")
    entries = [t for t in (tools if isinstance(tools, list) else [])]
    entries += [f for f in (functions if isinstance(functions, list) else [])]
    if not isinstance(tools, list) and not isinstance(functions, list):
        return None, None
    names = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        function = entry.get("function")
        name = function.get("name") if isinstance(function, dict) else entry.get("name")
        if isinstance(name, str) and len(names) < LIST_ITEMS:
            names.append(name[:NAME_CHARS])
    return len(entries), names


def _logits_processors(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    names = []
    for entry in value[:LIST_ITEMS]:
        if isinstance(entry, str):
            names.append(entry[:NAME_CHARS * 2])
        elif isinstance(entry, dict) and isinstance(entry.get("qualname"), str):
            names.append(entry["qualname"][:NAME_CHARS * 2])
    return names


def _size(value: Any) -> int | None:
    return len(value) if isinstance(value, dict | list) else None


def _parameters(dialect: str, body: dict[str, Any]) -> dict[str, Any]:
    """Sampling and extraction parameters, wherever the dialect puts them."""
    params = dict(body)
    nested = body.get("parameters")  # TGI, Triton
    if isinstance(nested, dict):
        params.update(nested)
    options = body.get("options")  # Ollama
    if dialect == "ollama" and isinstance(options, dict):
        params.update(options)
        if "num_predict" in options:
            params["max_tokens"] = options["num_predict"]

    logprobs = params.get("logprobs")
    top_logprobs = integer(params.get("top_logprobs"))
    if dialect == "openai" and integer(logprobs) is not None:  # legacy completions: logprobs=N
        top_logprobs = integer(logprobs) if top_logprobs is None else top_logprobs
        logprobs = True
    if dialect == "tgi":
        if top_logprobs is None:
            top_logprobs = integer(params.get("top_n_tokens"))
        if logprobs is None and params.get("details") is True:
            logprobs = True
    include = body.get("include")
    if isinstance(include, list) and any(isinstance(i, str) and i.endswith("logprobs") for i in include):
        logprobs = True
    prompt_logprobs = integer(params.get("prompt_logprobs"))
    if prompt_logprobs is None and dialect == "tgi" and params.get("decoder_input_details") is True:
        prompt_logprobs = 1

    max_tokens = None
    for key in _MAX_TOKENS_KEYS:
        max_tokens = integer(params.get(key))
        if max_tokens is not None:
            break
    stream = boolean(body.get("stream"))
    if stream is None and isinstance(nested, dict):
        stream = boolean(nested.get("stream"))
    if stream is None and dialect == "ollama":
        stream = True  # Ollama streams unless told not to
    tool_count, tool_names = _tools(body)
    template = body.get("chat_template") if dialect != "ollama" else body.get("template")
    return {
        "logprobs": boolean(logprobs),
        "top_logprobs": top_logprobs,
        "prompt_logprobs": prompt_logprobs,
        "logit_bias_size": _size(params.get("logit_bias")),
        "n": integer(params.get("n")),
        "best_of": integer(params.get("best_of")),
        "echo": boolean(params.get("echo")),
        "allowed_token_ids_size": _size(params.get("allowed_token_ids")),
        "max_tokens": max_tokens,
        "temperature": number(params.get("temperature")),
        "stream": stream,
        "tool_count": tool_count,
        "tool_names": tool_names,
        "chat_template": text(template, TEMPLATE_CHARS),
        "logits_processors": _logits_processors(params.get("logits_processors")),
        "user": text(body.get("user"), NAME_CHARS * 2),
    }


# --- the layer ------------------------------------------------------------------------------------


def build(ctx: Any) -> dict[str, Any] | None:
    """The `llm` object of an exchange, or None when it is not an LLM API call."""
    request = ctx.exchange.request
    if request is None or request.method != "POST" or "s3" in ctx.record:
        return None
    # As sent, else as the server routes it: percent-decoded (Starlette, axum, Go all decode).
    route, path, hidden = webapi.route_request(ctx, _route)
    body_value = None
    if route is None:
        if path not in _BODY_DISPATCHED or not webapi.looks_like_json(request):
            return None
        body_value = webapi.read_json(request, _ignore, "llm_request")
        if not isinstance(body_value, dict):
            return None
        dispatched = _body_route(body_value)
        if dispatched is None:
            return None
        route = (*dispatched, None)
    dialect, api, path_model = route
    if body_value is None:
        body_value = webapi.read_json(request, ctx.anomaly, "llm_request")
    body = webapi.json_object(body_value, ctx.anomaly, "llm_request") or {}

    if dialect == "triton" and api == "generate" and body.get("stream") is True:
        api = "generate_stream"
    model = text(body.get("model"), NAME_CHARS * 2) or path_model
    obj: dict[str, Any] = {"api": api, "dialect": dialect, "model": model}
    webapi.note_routing(ctx, LAYER, obj, path, hidden)  # not again on an Ollama call: its object says it
    if body:
        obj.update(_prompt(dialect, api, body).object())
        obj.update(_parameters(dialect, body))
    response = ctx.exchange.response
    if response is not None:
        obj.update(summarize(ctx.anomaly, dialect, response))
    return prune(obj)


def _ignore(event: str, message: str) -> None:
    """Body-dispatched routes (`/`) are not claimed on a body that does not parse: no anomaly."""


declare(LAYER, [
    ("llm.api", "string", "Operation: chat_completions, completions, responses, embeddings, generate, "
     "generate_stream, chat."),
    ("llm.routed_path", "string", "The path percent-decoded, present only when the path as sent (http.url) "
     "does not route (e.g. /v1/chat%2Fcompletions): an encoded path is also the llm_path_obfuscated anomaly."),
    ("llm.dialect", "string", "API family: openai (and compatible servers), tgi, triton, ollama."),
    ("llm.model", "string", "Requested model (body `model`, or the Triton model in the path)."),
    ("llm.prompt", "string", f"Prompt text: messages as `role: text` lines, or the prompt/input text; "
     f"first {PROMPT_CHARS} characters."),
    ("llm.prompt_length", "integer", "Length in characters of the whole prompt text (llm.prompt is capped)."),
    ("llm.user_prompt", "string", f"The user-controlled part of the prompt, what injection rules match: every "
     f"turn but system/developer/assistant ones (user, tool results...) as `role: text` lines, and role-less "
     f"prompt/input text; whole up to {USER_HEAD_CHARS + USER_TAIL_CHARS} characters, else the first "
     f"{USER_HEAD_CHARS} and the last {USER_TAIL_CHARS} joined by ' … '."),
    ("llm.user_prompt_length", "integer", "Length in characters of the whole user-controlled text "
     "(llm.user_prompt is capped)."),
    ("llm.message_count", "integer", "Number of chat messages (chat, responses with a message list)."),
    ("llm.input_count", "integer", "Number of prompts / embedding inputs in a batched request."),
    ("llm.prompt_token_ids", "integer", "Token ids sent directly as the prompt (completions/embeddings)."),
    ("llm.roles", "list[string]", f"Distinct message roles in order of appearance (first {LIST_ITEMS})."),
    ("llm.has_system_prompt", "boolean", "A system/developer message, `instructions` or Ollama `system` is present."),
    ("llm.logprobs", "boolean", "Log-probabilities of generated tokens requested (logprobs, TGI details)."),
    ("llm.top_logprobs", "integer", "Alternatives per token requested (top_logprobs, legacy logprobs=N, "
     "TGI top_n_tokens)."),
    ("llm.prompt_logprobs", "integer", "Prompt-token log-probabilities requested (vLLM prompt_logprobs; "
     "TGI decoder_input_details counts as 1)."),
    ("llm.logit_bias_size", "integer", "Number of entries in logit_bias."),
    ("llm.n", "integer", "Completions requested per prompt (n)."),
    ("llm.best_of", "integer", "best_of."),
    ("llm.echo", "boolean", "echo: the prompt is returned with its log-probabilities."),
    ("llm.allowed_token_ids_size", "integer", "Number of allowed_token_ids (vLLM)."),
    ("llm.max_tokens", "integer", "Output token limit (max_tokens, max_completion_tokens, max_output_tokens, "
     "max_new_tokens, Ollama num_predict)."),
    ("llm.temperature", "number", "Sampling temperature."),
    ("llm.stream", "boolean", "Streaming requested (Ollama streams when `stream` is absent)."),
    ("llm.tool_count", "integer", "Number of tools/functions offered to the model."),
    ("llm.tool_names", "list[string]", f"Names of the offered tools/functions (first {LIST_ITEMS})."),
    ("llm.chat_template", "string", f"Per-request chat template (vLLM chat_template, Ollama template); "
     f"first {TEMPLATE_CHARS} characters."),
    ("llm.logits_processors", "list[string]", "Requested logits processors (vLLM qualnames)."),
    ("llm.user", "string", "End-user identifier sent in the body (`user`)."),
    ("llm.finish_reasons", "list[string]", "Why generation stopped, per choice: stop, length, tool_calls, "
     "eos_token, completed, max_output_tokens, ..."),
    ("llm.usage", "object", "Token usage reported by the server."),
    ("llm.usage.prompt_tokens", "integer", "Prompt (input) tokens."),
    ("llm.usage.completion_tokens", "integer", "Generated (output) tokens."),
    ("llm.usage.total_tokens", "integer", "Total tokens."),
    ("llm.response_length", "integer", "Characters of generated text in the response (all choices/chunks)."),
    ("llm.stream_chunks", "integer", "Streamed responses: SSE data events (not [DONE]) or JSON lines."),
    ("llm.stream_complete", "boolean", "Streamed responses: the stream's end marker was seen ([DONE], "
     "final details, done: true, response.completed; Triton: the body ended normally)."),
    ("llm.embedding_count", "integer", "Embedding vectors returned."),
    ("llm.embedding_dimensions", "integer", "Dimensions of the first returned embedding."),
    ("llm.error", "string", f"Error message of the response; first {ERROR_CHARS} characters."),
])
