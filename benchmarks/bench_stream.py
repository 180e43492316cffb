"""The sidecar's cost per byte of a large streamed body, in-process (no proxy, no network).

A model pulled through the sidecar (S3 GET of a 64 MiB safetensors object) streams: the first
MiB is held and inspected, the rest passes through `HeldBodyStream` chunk by chunk. This feeds
the same body, in mitmproxy-sized chunks, through the sidecar's stream callable (held part
inspected by a trivial decision, every chunk fed to the message's builder) and through a bare
callable that returns each chunk, alternating, and prints the CPU per 64 MiB of each and the
sidecar's extra per chunk; then the sidecar's stream as the proxy runs it for an answer with a
Content-Length over HTTP/1: once the stream hands the rest back (past the inspected prefix),
mitmproxy stops calling it, which plain mitmdump, with no stream callable at all, never does.
The proxy itself (mitmproxy's reads and writes, TLS) comes on top of all of them:
`bench_live.py` and `bench_hold.py` measure that.

    python benchmarks/bench_stream.py [--megabytes 64] [--chunk 65536] [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import struct
import time

from inspector.http import TO_CLIENT, HttpMessage
from inspector.limits import Limits
from inspector.live.bodystream import HeldBodyStream
from inspector.live.inspection import Decision
from inspector.live.messages import StreamedMessage


def safetensors_body(size: int) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [size // 4], "data_offsets": [0, size]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(size)


def through_sidecar(chunks: list[bytes], total: int, *, hand_back: bool = False) -> float:
    """CPU seconds of the sidecar's stream over `chunks`; `hand_back`: as the proxy runs it for a
    Content-Length answer over HTTP/1, where the calls stop once the stream hands the rest back."""
    head = HttpMessage(kind="response", version="HTTP/1.1", status=200, reason="OK",
                       headers=[("content-type", "binary/octet-stream"), ("content-length", str(total))])
    limits = Limits()
    started = time.process_time()
    body = StreamedMessage(limits, TO_CLIENT, head)
    handed_back = False

    def handing_back() -> bool:
        nonlocal handed_back
        handed_back = body.hand_back(total)
        return handed_back

    stream = HeldBodyStream(body, lambda held, complete: Decision("allow", {}), lambda reason: None,
                            lambda exc: False, time.time, hold_bytes=limits.body_keep_bytes,
                            hand_back=handing_back if hand_back else None)
    for chunk in chunks:
        if handed_back:  # mitmproxy: `stream` is True now, the chunk goes out as it is
            continue
        stream(chunk)
    if not handed_back:
        stream(b"")
    exchange, _ = stream.end([], time.time())
    assert exchange.response is not None and exchange.response.body_length == total
    return time.process_time() - started


def bare(chunks: list[bytes], total: int) -> float:
    def passing(data: bytes) -> bytes:
        return data

    started = time.process_time()
    for chunk in chunks:
        passing(chunk)
    passing(b"")
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--megabytes", type=int, default=64, help="body size in MiB (default 64)")
    parser.add_argument("--chunk", type=int, default=65536, help="bytes per chunk (default 65536)")
    parser.add_argument("--repeat", type=int, default=7, help="alternating runs of each (default 7)")
    args = parser.parse_args()
    body = safetensors_body(args.megabytes << 20)
    chunks = [body[i:i + args.chunk] for i in range(0, len(body), args.chunk)]
    sidecar, plain, handed = [], [], []
    for _ in range(args.repeat):
        sidecar.append(through_sidecar(chunks, len(body)))
        plain.append(bare(chunks, len(body)))
        handed.append(through_sidecar(chunks, len(body), hand_back=True))
    best, baseline, handed_best = min(sidecar), min(plain), min(handed)
    print(f"{args.megabytes} MiB in {len(chunks)} chunks of {args.chunk} bytes, fastest of {args.repeat}")
    print(f"bare stream callable : {baseline * 1000:7.2f} ms")
    print(f"sidecar's stream     : {best * 1000:7.2f} ms  ({(best - baseline) * 1e6 / len(chunks):.2f} us a chunk "
          f"more, {(best - baseline) * 1000 / (args.megabytes / 64):.2f} ms per 64 MiB)")
    print(f"sidecar's stream, handed back past the first MiB (HTTP/1, Content-Length): {handed_best * 1000:7.2f} ms "
          f"({(handed_best - baseline) * 1000 / (args.megabytes / 64):+.2f} ms per 64 MiB against the bare callable, "
          "which plain mitmdump does not pay either)")


if __name__ == "__main__":
    main()
