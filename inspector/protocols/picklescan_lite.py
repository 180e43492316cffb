"""The globals a pickle would import, listed from its opcodes without unpickling it.

`pickle_globals(data)` walks the opcode stream with `pickletools.genops` and returns the
`module.name` of every GLOBAL / INST / STACK_GLOBAL (the latter resolved from the strings pushed
before it, memo included). `dangerous_globals` keeps those that run code or touch the system
when a victim unpickles them. The data may be a prefix: the walk stops where the bytes end or
stop making sense, keeping what it found. Nothing here executes or imports anything.
"""

from __future__ import annotations

import io
import pickletools

#: Globals kept per pickle; opcodes walked per pickle.
MAX_GLOBALS = 32
MAX_OPCODES = 200_000

_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                         "BINSTRING", "STRING", "SHORT_BINBYTES", "BINBYTES", "BINBYTES8"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})

#: Whole modules whose every global is dangerous to unpickle.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "socket", "shutil", "pty", "runpy", "importlib", "ctypes",
    "marshal", "pickle", "_pickle", "code", "codeop", "pdb", "timeit", "webbrowser", "commands", "popen2",
    "multiprocessing", "asyncio", "requests", "urllib", "http", "ftplib", "telnetlib", "smtplib",
})
#: Single dangerous globals in otherwise harmless modules.
DANGEROUS_GLOBALS = frozenset({
    "builtins.eval", "builtins.exec", "builtins.compile", "builtins.__import__", "builtins.getattr",
    "builtins.setattr", "builtins.open", "builtins.breakpoint", "builtins.input", "builtins.globals",
    "__builtin__.eval", "__builtin__.exec", "__builtin__.compile", "__builtin__.__import__",
    "__builtin__.getattr", "__builtin__.open", "__builtin__.execfile", "operator.attrgetter",
    "operator.methodcaller", "functools.partial", "torch.load", "torch.hub.load", "numpy.load",
    "torch.serialization.load", "types.FunctionType", "types.CodeType",
})


#: First bytes of protocol 0/1 pickles (no PROTO opcode): MARK, GLOBAL, empty containers, scalars.
_OLD_PROTOCOL_STARTS = frozenset(b"(c]})INSVLFGJKMTUX")


def looks_like_pickle(data: bytes, complete: bool = False) -> bool:
    """A protocol 2-5 pickle starts with PROTO (0x80) and its version. A protocol 0/1 pickle has
    no marker: a `complete` value is one when pickletools can disassemble all of it, stack and
    memo checked, up to a final STOP (text that merely looks like opcodes fails those checks)."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    if not complete or len(data) < 2 or data[0] not in _OLD_PROTOCOL_STARTS or data[-1:] != b".":
        return False
    try:
        pickletools.dis(data, out=io.StringIO())
    except Exception:  # pickletools raises several types on bytes that are not a pickle
        return False
    return True


def pickle_globals(data: bytes) -> list[str]:
    """`module.name` of the globals the pickle imports, in order, without duplicates (capped)."""
    found: list[str] = []
    strings: list[str | None] = []
    memo: dict[int, str | None] = {}
    last: str | None = None
    try:
        for count, (opcode, arg, _pos) in enumerate(pickletools.genops(io.BytesIO(data))):
            if count >= MAX_OPCODES:
                break
            name = opcode.name
            if name in _STRING_OPS:
                last = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
                strings.append(last)
                del strings[:-2]
                continue
            if name in _MEMO_GET:
                last = memo.get(arg)
                strings.append(last)
                del strings[:-2]
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = last
                continue
            if name in _MEMO_PUT:
                memo[arg] = last
                continue
            qualified = None
            if name in ("GLOBAL", "INST") and isinstance(arg, str):
                qualified = ".".join(arg.split(" ", 1))
            elif name == "STACK_GLOBAL" and len(strings) == 2 and None not in strings:
                qualified = f"{strings[0]}.{strings[1]}"
            last = None
            strings.clear()
            if qualified and qualified not in found:
                found.append(qualified)
                if len(found) >= MAX_GLOBALS:
                    break
    except (ValueError, EOFError, KeyError, IndexError, UnicodeDecodeError, OverflowError, TypeError):
        pass  # a prefix, or bytes that stop being a pickle: keep what was found
    return found


def dangerous_globals(globals_: list[str]) -> list[str]:
    """Those of `globals_` that execute code or reach the system when unpickled."""
    out = []
    for name in globals_:
        module = name.split(".", 1)[0]
        if module in DANGEROUS_MODULES or name in DANGEROUS_GLOBALS:
            out.append(name)
    return out
