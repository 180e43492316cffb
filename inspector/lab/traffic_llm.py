"""LLM serving traffic: OpenAI-compatible chat and completion calls (vLLM, TGI's Messages API, ...).

Request bodies carry what the OpenAI SDK sends (`model`, `messages`, sampling options), answers
are chat.completion / text_completion objects with usage. Extra request keys (logprobs,
logit_bias, vLLM's chat_template ...) are passed through `**options` as the SDK's `extra_body`.
"""

from __future__ import annotations

from typing import Any

from inspector.lab.traffic_http import json_request, json_response

HOST = "vllm:8000"


def chat_request(model: str, messages: list[dict[str, str]], *, host: str = HOST, **options: Any) -> bytes:
    return json_request("POST", "/v1/chat/completions", host, {"model": model, "messages": messages, **options},
                        [("Authorization", "Bearer sk-lab-0000"), ("User-Agent", "OpenAI/Python 1.40.0")])


def completion_request(model: str, prompt: str, *, host: str = HOST, **options: Any) -> bytes:
    return json_request("POST", "/v1/completions", host, {"model": model, "prompt": prompt, **options},
                        [("Authorization", "Bearer sk-lab-0000"), ("User-Agent", "OpenAI/Python 1.40.0")])


def chat_answer(model: str, text: str, *, prompt_tokens: int = 24, logprobs: int = 0) -> bytes:
    words = text.split()
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                              "finish_reason": "stop"}
    if logprobs:
        choice["logprobs"] = {"content": [{"token": w, "logprob": -0.1 * (i + 1),
                                           "top_logprobs": [{"token": w, "logprob": -0.1 * (i + 1)}] * logprobs}
                                          for i, w in enumerate(words)]}
    return json_response({"id": "chatcmpl-lab0001", "object": "chat.completion", "created": 1767225600,
                          "model": model, "choices": [choice],
                          "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                                    "total_tokens": prompt_tokens + len(words)}})


def completion_answer(model: str, text: str, *, prompt_tokens: int = 8) -> bytes:
    return json_response({"id": "cmpl-lab0001", "object": "text_completion", "created": 1767225600, "model": model,
                          "choices": [{"index": 0, "text": text, "finish_reason": "length", "logprobs": None}],
                          "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                                    "total_tokens": prompt_tokens + len(text.split())}})
