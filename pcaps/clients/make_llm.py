"""Capture LLM API traffic on loopback: the `openai` client and plain HTTP against protocol-shaped servers.

Writes, next to this script (or into `--out DIR`):

* `llm.pcap`: the real `openai` Python client against :class:`apisim_llm.OpenAIHandler` (chat with
  extraction parameters and a tool, chat streamed with usage, legacy completions with
  logprobs/echo/n/best_of/logit_bias, embeddings, Responses API plain and streamed, vLLM extras,
  a 404), then urllib against TGI (`/generate` with details, `/generate_stream`, `POST /`),
  Triton generate (`generate`, `generate_stream`) and Ollama (`/api/chat` streamed,
  `/api/generate` not streamed).
* `llm-malformed.pcap`: a request body that is not JSON, a request cut short by the client, an
  event stream without data lines, one with chunks that are not JSON, a response that is not JSON.

The servers answer like the real products closely enough for the clients; they are not the
products. Needs root (tcpdump on lo). Usage: `python pcaps/clients/make_llm.py [--out DIR]`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import urllib.request
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import openai
from apisim import HERE, HOST, serve, tcpdump
from apisim_llm import (
    MalformedLlmHandler,
    OllamaHandler,
    OpenAIHandler,
    TgiHandler,
    TritonGenerateHandler,
)

API_KEY = "sk-apisim-0123456789abcdef"  # must never appear in the EVE output
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def post_json(port: int, path: str, body: object) -> bytes:
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read()


def openai_calls(port: int) -> None:
    client = openai.OpenAI(base_url=f"http://{HOST}:{port}/v1", api_key=API_KEY, max_retries=0)
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "You are a terse geography assistant."},
                  {"role": "user", "content": "What is the capital of France?"}],
        logprobs=True, top_logprobs=5, temperature=0.2, max_tokens=64, tools=[WEATHER_TOOL], user="analyst-7")
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": [{"type": "text", "text": "Name a capital."}]}],
        stream=True, stream_options={"include_usage": True})
    for _ in stream:
        pass
    client.completions.create(model="davinci-002", prompt="The capital of France is", logprobs=5, echo=True,
                              n=2, best_of=3, logit_bias={"50256": -100}, max_tokens=5)
    client.embeddings.create(model="text-embedding-3-small", input=["feature store", "model registry"])
    client.responses.create(model="gpt-4o", instructions="Answer in one sentence.",
                            input="What is the capital of France?", max_output_tokens=32)
    for _ in client.responses.create(model="gpt-4o", input="Capital of France?", stream=True):
        pass
    client.chat.completions.create(
        model="meta-llama/Llama-3.1-8B-Instruct", messages=[{"role": "user", "content": "Hello"}],
        extra_body={"prompt_logprobs": 3, "allowed_token_ids": [1, 2, 3],
                    "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
                    "logits_processors": ["custom.processors.BiasProcessor"]})
    try:
        client.chat.completions.create(model="missing-model", messages=[{"role": "user", "content": "x"}])
    except openai.NotFoundError:
        pass


def tgi_calls(port: int) -> None:
    post_json(port, "/generate", {"inputs": "What is Deep Learning?",
                                  "parameters": {"max_new_tokens": 5, "details": True,
                                                 "decoder_input_details": True, "top_n_tokens": 3}})
    post_json(port, "/generate_stream", {"inputs": "What is Deep Learning?", "parameters": {"max_new_tokens": 20}})
    post_json(port, "/", {"inputs": "Hello", "parameters": {"temperature": 0.5}, "stream": False})


def triton_calls(port: int) -> None:
    post_json(port, "/v2/models/llama3/generate", {"text_input": "What is machine learning?", "max_tokens": 20,
                                                   "bad_words": "", "stop_words": ""})
    post_json(port, "/v2/models/llama3/generate_stream", {"text_input": "What is ML?",
                                                          "parameters": {"stream": True, "temperature": 0.7}})


def ollama_calls(port: int) -> None:
    post_json(port, "/api/chat", {"model": "llama3", "messages": [
        {"role": "system", "content": "Reply in French."}, {"role": "user", "content": "Why is the sky blue?"}],
        "tools": [WEATHER_TOOL]})
    post_json(port, "/api/generate", {"model": "llama3", "prompt": "Why is the sky blue?", "system": "Be brief.",
                                      "stream": False, "options": {"temperature": 0.1, "num_predict": 42}})


def malformed_calls(port: int) -> None:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    connection.request("POST", "/v1/chat/completions", body=b'{"model": "gpt-4o", "messages": [',
                       headers={"Content-Type": "application/json"})
    connection.getresponse().read()
    for model in ("no-data", "bad-chunks"):
        connection.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"},
                           body=json.dumps({"model": model, "stream": True,
                                            "messages": [{"role": "user", "content": "hi"}]}).encode())
        connection.getresponse().read()
    connection.request("POST", "/v1/completions", body=b'{"model": "davinci-002", "prompt": "x"}',
                       headers={"Content-Type": "application/json"})
    connection.getresponse().read()
    connection.close()
    # A request whose body stops 100 bytes short: the client gives up and closes.
    with socket.create_connection((HOST, port), timeout=10) as sock:
        body = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "cut'
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + f"{HOST}:{port}".encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body) + 100).encode() + b"\r\n\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass


def make(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    main_pcap = out_dir / "llm.pcap"
    with ExitStack() as stack:
        ports = [stack.enter_context(serve(h)) for h in (OpenAIHandler, TgiHandler, TritonGenerateHandler,
                                                        OllamaHandler)]
        with tcpdump(main_pcap, ports):
            openai_calls(ports[0])
            tgi_calls(ports[1])
            triton_calls(ports[2])
            ollama_calls(ports[3])
    malformed_pcap = out_dir / "llm-malformed.pcap"
    with serve(MalformedLlmHandler) as port, tcpdump(malformed_pcap, [port]):
        malformed_calls(port)
    return [main_pcap, malformed_pcap]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory for the pcaps (default: beside this script)")
    for path in make(parser.parse_args().out):
        print(f"{path} {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
