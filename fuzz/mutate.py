"""A small deterministic mutator: one `random.Random` in, a mutated input out.

The operators are the classic ones (AFL's havoc stage in spirit): bit flips, random bytes,
"interesting" integers written over 1, 2, 4 or 8 bytes in both byte orders (0, -1, 0x7f..,
0x80.., lengths near a cap), protobuf varints that claim huge lengths, block deletion,
duplication and insertion, splices with another seed, and truncation. Several operators are
stacked per input. Given the same seed list and RNG seed, the sequence of inputs is the same.
"""

from __future__ import annotations

import random

_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x4000, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0xFFFFFF,
                0x1000000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x100000000, 0x7FFFFFFFFFFFFFFF,
                0xFFFFFFFFFFFFFFFF, 16 * 1024 * 1024, 64 * 1024 * 1024 + 1, 4096, 16384, 16385, 65535)
_TOKENS = (b"\r\n", b"\r\n\r\n", b"\n", b":", b" ", b"0\r\n\r\n", b"ffffffffffffffff\r\n", b"Content-Length: ",
           b"Transfer-Encoding: chunked\r\n", b"Content-Encoding: gzip\r\n", b"\x00\x00\x00\x00\x00",
           b"\x01\xff\xff\xff\xff", b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
           b'"', b"{", b"}", b"[", b"]", b"null", b"-1", b"1e999", b"\xc0", b"\xff\xfe", b"%", b"\\u0000",
           b"\\ud800", b"\\udfff")  # JSON escapes of lone surrogates: text no UTF-8 writer takes


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def mutate(data: bytes, rng: random.Random, corpus: list[bytes], max_size: int = 256 * 1024) -> bytes:
    """One mutated input from `data` (`corpus`: other seeds to splice with)."""
    buf = bytearray(data)
    for _ in range(1 + int(rng.expovariate(0.6))):
        _one(buf, rng, corpus)
    if len(buf) > max_size:
        del buf[max_size:]
    return bytes(buf)


def _one(buf: bytearray, rng: random.Random, corpus: list[bytes]) -> None:
    n = len(buf)
    op = rng.randrange(12)
    if n == 0:
        buf += rng.randbytes(rng.randrange(1, 64))
        return
    at = rng.randrange(n)
    if op == 0:  # bit flip
        buf[at] ^= 1 << rng.randrange(8)
    elif op == 1:  # random byte
        buf[at] = rng.randrange(256)
    elif op == 2:  # interesting integer, 1/2/4/8 bytes, either order
        size = rng.choice((1, 2, 4, 8))
        value = rng.choice(_INTERESTING) & ((1 << (8 * size)) - 1)
        packed = value.to_bytes(size, rng.choice(("big", "little")))
        buf[at:at + size] = packed
    elif op == 3:  # arithmetic on a byte or a big-endian u16/u32 (a length that lies a little)
        size = rng.choice((1, 2, 4))
        chunk = bytes(buf[at:at + size]).ljust(size, b"\0")
        value = (int.from_bytes(chunk, "big") + rng.randint(-35, 35)) % (1 << (8 * size))
        buf[at:at + size] = value.to_bytes(size, "big")
    elif op == 4:  # delete a block
        length = min(n - at, rng.choice((1, 2, 4, 16, 128, 1024)))
        del buf[at:at + length]
    elif op == 5:  # duplicate a block (repetition floods: frames, headers, chunks)
        length = min(n - at, rng.choice((1, 8, 64, 512)))
        block = bytes(buf[at:at + length])
        buf[at:at] = block * rng.choice((1, 2, 8, 64))
    elif op == 6:  # insert random bytes
        buf[at:at] = rng.randbytes(rng.choice((1, 2, 4, 16, 64)))
    elif op == 7:  # insert a token
        buf[at:at] = rng.choice(_TOKENS)
    elif op == 8:  # a varint claiming a huge length or field
        buf[at:at] = _varint(rng.choice(_INTERESTING))
    elif op == 9 and corpus:  # splice with another seed
        other = rng.choice(corpus)
        if other:
            start = rng.randrange(len(other))
            buf[at:] = other[start:start + rng.randrange(1, 4096)]
    elif op == 10:  # truncate
        del buf[rng.randrange(n):]
    else:  # overwrite a block with a copy of another part of the input
        src = rng.randrange(n)
        length = min(n - src, rng.choice((2, 4, 16, 64)))
        buf[at:at + length] = buf[src:src + length]

