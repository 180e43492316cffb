"""The globals a pickle would import, listed from its opcodes without unpickling it.

`scan_pickle(data)` walks the opcode stream with `pickletools.genops` and follows the
unpickler's stack symbolically (strings as themselves, every other object as unknown, marks and
memo included), so it names the `module.name` of every GLOBAL / INST / STACK_GLOBAL whatever
other opcodes an author puts between a STACK_GLOBAL's two strings. It tells which of them run
code or touch the system when a victim unpickles them (over every global it met, not only the
first ones it lists) and whether the walk reached the pickle's STOP: the data may be a prefix,
and the walk stops where the bytes end or stop making sense, keeping what it found. Nothing here
executes or imports anything.

`looks_like_pickle` accepts what `pickle.loads` accepts at the start of a value: PROTO 0-5, a
FRAME without PROTO, and protocol 0/1 opcodes when the whole value disassembles to a STOP
(trailing bytes after the STOP, which `pickle.loads` ignores, allowed).
"""

from __future__ import annotations

import io
import pickletools
import struct
from dataclasses import dataclass

#: Globals kept per pickle (and dangerous ones); opcodes walked per pickle.
MAX_GLOBALS = 32
MAX_OPCODES = 200_000

_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                         "BINSTRING", "STRING", "SHORT_BINBYTES", "BINBYTES", "BINBYTES8"})
_MEMO_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_OPCODE_BYTES = frozenset(op.code.encode("latin-1")[0] for op in pickletools.opcodes)

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
_FRAME = 0x95
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class PickleFindings:
    """What one walk over a pickle's opcodes found."""

    #: `module.name` of the globals imported, in order, without duplicates (first MAX_GLOBALS).
    globals: list[str]
    #: Those of every global met (listed or not) that run code or reach the system when unpickled.
    dangerous: list[str]
    #: The walk reached the pickle's STOP: nothing past what it saw can import anything.
    complete: bool


def looks_like_pickle(data: bytes, complete: bool = False) -> bool:
    """Would `pickle.loads` take `data` for a pickle? A PROTO opcode (0x80, version 0-5) or a
    FRAME (0x95, protocol 4+ framing) first says so. A protocol 0/1 pickle has no marker: a
    `complete` value is one when pickletools disassembles it, stack and memo checked, up to a STOP
    (bytes after it are ignored, as pickle.loads ignores them; text that merely looks like opcodes
    fails those checks)."""
    if len(data) >= 2 and data[0] == 0x80 and data[1] <= 5:
        return True
    if len(data) >= 10 and data[0] == _FRAME and _U64.unpack_from(data, 1)[0] < 1 << 40 and data[9] in _OPCODE_BYTES:
        return True
    if not complete or len(data) < 2 or data[0] not in _OLD_PROTOCOL_STARTS:
        return False
    try:
        pickletools.dis(data, out=io.StringIO())
    except Exception:  # pickletools raises several types on bytes that are not a pickle
        return False
    return True


def may_start_pickle(head: bytes, complete: bool) -> bool:
    """False when a value starting with `head` (its first 10 bytes or so) cannot be what
    :func:`looks_like_pickle` accepts once the whole value is read (`complete`: it will be)."""
    return looks_like_pickle(head) or (complete and bool(head) and head[0] in _OLD_PROTOCOL_STARTS)


def is_dangerous(name: str) -> bool:
    return name.split(".", 1)[0] in DANGEROUS_MODULES or name in DANGEROUS_GLOBALS


class _Broken(Exception):
    """The opcodes stop making sense (stack underflow, no mark to pop to)."""


class _Stack:
    """The unpickler's stack, symbolically: strings as themselves, every other object None."""

    __slots__ = ("items", "marks")

    def __init__(self) -> None:
        self.items: list[str | None] = []
        self.marks: list[int] = []

    def push(self, item: str | None) -> None:
        self.items.append(item)

    def top(self) -> str | None:
        return self.items[-1] if self.items else None

    def pop(self, count: int = 1) -> list[str | None]:
        items = self.items
        floor = self.marks[-1] if self.marks else 0
        if count > len(items) - floor:
            raise _Broken
        popped = items[len(items) - count:] if count else []
        del items[len(items) - count:]
        return popped

    def pop_mark(self) -> None:
        if not self.marks:
            raise _Broken
        del self.items[self.marks.pop():]

    def pop_one(self) -> None:
        """POP: the top item, or the top mark when nothing is above it (as the unpickler does)."""
        if self.marks and self.marks[-1] == len(self.items):
            self.marks.pop()
        else:
            self.pop()


def scan_pickle(data: bytes) -> PickleFindings:
    """Walk `data`'s opcodes (a whole pickle or a prefix) and say what it imports."""
    found: list[str] = []
    dangerous: list[str] = []
    seen: set[str] = set()
    stack = _Stack()
    memo: dict[int, str | None] = {}
    complete = False
    try:
        for count, (opcode, arg, _pos) in enumerate(pickletools.genops(io.BytesIO(data))):
            if count >= MAX_OPCODES:
                break
            name = opcode.name
            qualified = None
            if name in _STRING_OPS:
                stack.push(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
            elif name in _MEMO_GET:
                stack.push(memo.get(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = stack.top()
            elif name in _MEMO_PUT:
                memo[arg] = stack.top()
            elif name == "MARK":
                stack.marks.append(len(stack.items))
            elif name == "POP":
                stack.pop_one()
            elif name == "POP_MARK":
                stack.pop_mark()
            elif name == "DUP":
                stack.push(stack.top())
            elif name == "STOP":
                complete = True
                break
            elif name in ("GLOBAL", "INST"):
                if isinstance(arg, str):
                    qualified = ".".join(arg.split(" ", 1))
                if name == "INST":
                    stack.pop_mark()
                stack.push(None)
            elif name == "STACK_GLOBAL":
                module, attribute = stack.pop(2)
                if isinstance(module, str) and isinstance(attribute, str):
                    qualified = f"{module}.{attribute}"
                stack.push(None)
            else:
                _generic(stack, opcode)
            if qualified and qualified not in seen:
                seen.add(qualified)
                if len(found) < MAX_GLOBALS:
                    found.append(qualified)
                if is_dangerous(qualified) and len(dangerous) < MAX_GLOBALS:
                    dangerous.append(qualified)
    except (_Broken, ValueError, EOFError, KeyError, IndexError, UnicodeDecodeError, OverflowError, TypeError):
        pass  # a prefix, or bytes that stop being a pickle: keep what was found
    return PickleFindings(found, dangerous, complete)


def _generic(stack: _Stack, opcode: pickletools.OpcodeInfo) -> None:
    """Any other opcode: pop what it takes (down to a mark when it takes one), push unknowns."""
    before = opcode.stack_before
    if pickletools.markobject in before:
        stack.pop_mark()
        stack.pop(before.index(pickletools.markobject))
    else:
        stack.pop(len(before))
    for _ in opcode.stack_after:
        stack.push(None)
