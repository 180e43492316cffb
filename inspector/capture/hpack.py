"""HPACK header block decoder (RFC 7541), decode only, for the passive HTTP/2 observer.

`HpackDecoder` turns the header blocks of one direction of a connection into `(name, value)`
lists: names lower-cased, names and values decoded as latin-1 (every octet maps to one character,
so nothing a peer sends is lost or refused). It keeps the dynamic table (section 2.3.2) with the
RFC's size accounting (name + value octets + 32 per entry, section 4.1), evicts oldest first
(section 4.4), and applies dynamic table size updates (section 6.3) within the limit the receiver
advertised (SETTINGS_HEADER_TABLE_SIZE), which the caller sets as `max_table_size`.

Huffman strings (section 5.2) are decoded by a byte-at-a-time automaton built once, when the
first Huffman string is decoded (about 25 ms; a run that meets no HTTP/2 never builds it): its
states are the 256 internal nodes of the code tree (plus a dead state entered when EOS is decoded),
and for each (state, input octet) two flat lists hold the octets emitted and the next state. A
string costs one lookup per input octet and one join. The string is accepted only if it ends at the
root or at most 7 bits down the all-ones path, i.e. its padding is a prefix of EOS shorter than
a byte, and EOS itself never appears.

Errors: every malformed block raises a subclass of `HpackError` (a `ValueError`) saying what was
wrong and where; nothing else escapes `decode` for any input. After an error the table is out of
step with the peer's encoder: the caller stops decoding that direction.

A block that leaves the table unchanged (only indexed fields and literals without indexing, which
is what a steady gRPC stream sends) decodes to the same list every time until the table changes,
so `decode` keeps the last `cache_blocks` such results keyed by the block's bytes; any table
change empties that cache.

The static table and the Huffman code lengths are transcribed from RFC 7541 Appendix A and B; the
code is canonical (codes of one length are consecutive, in symbol order), so the lengths define it.
"""

from __future__ import annotations

from collections import deque

__all__ = [
    "DEFAULT_TABLE_SIZE",
    "ENTRY_OVERHEAD",
    "EOS",
    "HUFFMAN_CODE_LENGTHS",
    "STATIC_TABLE",
    "HpackDecoder",
    "HpackError",
    "HpackHeaderListTooLarge",
    "HpackHuffmanError",
    "HpackIndexError",
    "HpackIntegerError",
    "HpackTableSizeError",
    "HpackTruncatedError",
    "huffman_automaton",
    "huffman_codes",
    "huffman_decode",
]

#: SETTINGS_HEADER_TABLE_SIZE before any SETTINGS frame (RFC 9113 section 6.5.2).
DEFAULT_TABLE_SIZE = 4096
#: Octets each dynamic table entry counts beyond its name and value (RFC 7541 section 4.1).
ENTRY_OVERHEAD = 32
#: An integer may have at most this many continuation octets after its prefix (section 5.1 lets a
#: decoder set the limit); five carry 35 bits, enough for any 32-bit value with any prefix.
MAX_INTEGER_CONTINUATION = 5
#: Larger integers are refused: nothing in HTTP/2 counts past 32 bits.
MAX_INTEGER = 2**32 - 1

# --- errors ---------------------------------------------------------------------------------------


class HpackError(ValueError):
    """A header block that does not decode (RFC 7541 calls this a decoding error)."""


class HpackIndexError(HpackError):
    """An index of 0, or past the end of the static and dynamic tables."""


class HpackIntegerError(HpackError):
    """An integer encoded with too many continuation octets, or larger than 32 bits."""


class HpackTruncatedError(HpackError):
    """The block ends inside a field representation, or a string runs past its end."""


class HpackHuffmanError(HpackError):
    """A Huffman string whose padding is not a prefix of EOS shorter than 8 bits, or that holds EOS."""


class HpackTableSizeError(HpackError):
    """A dynamic table size update above the allowed maximum, after a header field, or missing."""


class HpackHeaderListTooLarge(HpackError):
    """The decoded header list is over `max_header_list_size` (name + value + 32 per field)."""


# --- static table (RFC 7541 Appendix A) -----------------------------------------------------------

#: Index 1 to 61; names are lower case already.
STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)
_STATIC_COUNT = len(STATIC_TABLE)
_FIRST_DYNAMIC = _STATIC_COUNT + 1
#: Indexed by the HPACK index itself (slot 0 is never read: index 0 is an error).
_STATIC_BY_INDEX = (("", ""), *STATIC_TABLE)

# --- Huffman code (RFC 7541 Appendix B) -----------------------------------------------------------

#: Code length in bits of each symbol 0..255 and EOS (256), from the "len" column of Appendix B.
HUFFMAN_CODE_LENGTHS: tuple[int, ...] = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,  # 0-15
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,  # 16-31
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,  # 32-47
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,  # 48-63
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,  # 64-79
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,  # 80-95
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,  # 96-111
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,  # 112-127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,  # 128-143
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,  # 144-159
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,  # 160-175
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,  # 176-191
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,  # 192-207
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,  # 208-223
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,  # 224-239
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,  # 240-255
    30,  # EOS
)
EOS = 256


def huffman_codes(lengths: tuple[int, ...] = HUFFMAN_CODE_LENGTHS) -> list[int]:
    """The canonical code of each symbol: by (length, symbol), each code is the previous plus one,
    shifted left when the length grows."""
    codes = [0] * len(lengths)
    code = 0
    previous = 0
    for length, symbol in sorted((length, symbol) for symbol, length in enumerate(lengths)):
        code <<= length - previous
        codes[symbol] = code
        code += 1
        previous = length
    return codes


def _code_tree() -> list[list[int]]:
    """Internal nodes of the code tree, root first: `[child for bit 0, child for bit 1]`, where a
    child >= 0 is another internal node and a negative child `~symbol` is a leaf."""
    nodes = [[0, 0]]
    for symbol, (code, length) in enumerate(zip(huffman_codes(), HUFFMAN_CODE_LENGTHS, strict=True)):
        node = 0
        for shift in range(length - 1, 0, -1):
            bit = code >> shift & 1
            child = nodes[node][bit]
            if not child:
                child = len(nodes)
                nodes.append([0, 0])
                nodes[node][bit] = child
            node = child
        nodes[node][code & 1] = ~symbol
    return nodes


#: (emit, next_state, accepting, dead, paths): see _build_automaton.
_Automaton = tuple[list[bytes], list[int], frozenset[int], int, list[tuple[int, bool]]]


def _build_automaton() -> _Automaton:
    """The byte-at-a-time Huffman automaton (see the module docstring).

    Returns `(emit, next_state, accepting, dead, paths)`: states are numbered premultiplied by 256
    so that `state + octet` indexes `emit` and `next_state`; `dead` is the state entered once EOS is
    decoded (it stays there and emits nothing); `paths[node]` is the (depth, all ones) of each node,
    for error messages. Built through a 4-bit table first, then composed, to stay fast at import.
    """
    nodes = _code_tree()
    dead = len(nodes)
    # Per-node walk of 4 bits: (octets emitted, node reached).
    nibble_steps: list[list[tuple[bytes, int]]] = []
    for start in range(dead):
        row = []
        for nibble in range(16):
            node = start
            out = bytearray()
            for shift in (3, 2, 1, 0):
                child = nodes[node][nibble >> shift & 1]
                if child >= 0:
                    node = child
                elif ~child == EOS:
                    node = dead
                    break
                else:
                    out.append(~child)
                    node = 0
            row.append((bytes(out), node))
        nibble_steps.append(row)
    nibble_steps.append([(b"", dead)] * 16)
    premultiplied = [state * 256 for state in range(dead + 1)]
    interned: dict[bytes, bytes] = {}
    emit: list[bytes] = []
    next_state: list[int] = []
    for row in nibble_steps:
        for high_out, middle in row:
            for low_out, end in nibble_steps[middle]:
                out = high_out + low_out
                emit.append(interned.setdefault(out, out))
                next_state.append(premultiplied[end])
    paths = [(0, True)] * dead
    pending = [0]
    while pending:
        node = pending.pop()
        depth, ones = paths[node]
        for bit, child in enumerate(nodes[node]):
            if child > 0:
                paths[child] = (depth + 1, ones and bit == 1)
                pending.append(child)
    accepting = frozenset(premultiplied[node] for node in range(dead) if paths[node][1] and paths[node][0] <= 7)
    return emit, next_state, accepting, premultiplied[dead], paths


_automaton: _Automaton | None = None


def huffman_automaton() -> _Automaton:
    """The Huffman automaton, built at the first call (a flow-sharded run builds it before it
    forks its workers, which then share it)."""
    global _automaton
    if _automaton is None:
        _automaton = _build_automaton()
    return _automaton


def huffman_decode(data: bytes) -> bytes:
    """Decode one Huffman-coded string; raises `HpackHuffmanError` on bad padding or EOS."""
    emit, next_state, accepting, _, _ = _automaton or huffman_automaton()
    state = 0
    out = []
    append = out.append
    for octet in data:
        index = state + octet
        append(emit[index])
        state = next_state[index]
    if state not in accepting:
        raise HpackHuffmanError(_huffman_problem(state, len(data)))
    return b"".join(out)


def _huffman_problem(state: int, length: int) -> str:
    _, _, _, dead, paths = huffman_automaton()
    if state == dead:
        return f"EOS symbol inside a Huffman string of {length} octets"
    bits, all_ones = paths[state >> 8]
    if all_ones:
        return f"Huffman string of {length} octets ends with {bits} bits of padding (at most 7 allowed)"
    return f"Huffman string of {length} octets ends with {bits} bits that are not all-ones padding"


# --- decoder --------------------------------------------------------------------------------------


def _continued_integer(block: bytes, pos: int, value: int) -> tuple[int, int]:
    """The rest of an integer whose prefix bits were all ones (`value`); returns (value, position
    after it). Reading past the block raises IndexError, which `decode` reports as truncation."""
    shift = 0
    for _ in range(MAX_INTEGER_CONTINUATION):
        octet = block[pos]
        pos += 1
        value += (octet & 0x7F) << shift
        if octet < 0x80:
            if value > MAX_INTEGER:
                raise HpackIntegerError(f"integer {value} at octet {pos} is over the limit of {MAX_INTEGER}")
            return value, pos
        shift += 7
    raise HpackIntegerError(f"integer at octet {pos} has more than {MAX_INTEGER_CONTINUATION} continuation octets")


#: Huffman-decoded strings by their coded bytes. Header values repeat across connections and
#: requests (each connection's dynamic table starts empty, and tokens in `authorization` are sent
#: never-indexed, so the same literals come again): a hit saves the decode. Pure memoization,
#: bounded: strings up to 8 KiB, emptied when the coded strings held pass 4 MiB.
_HUFFMAN_MEMO: dict[bytes, str] = {}
_HUFFMAN_MEMO_OCTETS = 8192
_HUFFMAN_MEMO_BUDGET = 4 << 20
_huffman_memo_held = [0]


def _string(block: bytes, pos: int, end: int) -> tuple[str, int]:
    """A string literal (section 5.2) at `pos`, as latin-1; returns (text, position after it)."""
    first = block[pos]
    pos += 1
    length = first & 0x7F
    if length == 0x7F:
        length, pos = _continued_integer(block, pos, length)
    stop = pos + length
    if stop > end:
        raise HpackTruncatedError(f"string of {length} octets at octet {pos} runs past the end of the "
                                  f"{end}-octet block")
    if first & 0x80:
        coded = block[pos:stop]
        text = _HUFFMAN_MEMO.get(coded)
        if text is None:
            text = huffman_decode(coded).decode("latin-1")
            if length <= _HUFFMAN_MEMO_OCTETS:
                held = _huffman_memo_held[0] + length + 64
                if held > _HUFFMAN_MEMO_BUDGET:
                    _HUFFMAN_MEMO.clear()
                    held = length + 64
                _huffman_memo_held[0] = held
                _HUFFMAN_MEMO[coded] = text
        return text, stop
    return block[pos:stop].decode("latin-1"), stop


class HpackDecoder:
    """Decoder of the header blocks one encoder sends (one direction of an HTTP/2 connection).

    `max_table_size` is the SETTINGS_HEADER_TABLE_SIZE the receiver advertised: the dynamic table
    starts at that size and size updates may not go above it; it can be changed later (the table
    itself changes only when the encoder sends a size update, and must be within the limit by the
    end of the next block). `max_header_list_size` caps each decoded list (RFC 9113 section 6.5.2
    accounting). `cache_blocks` is how many table-neutral blocks are remembered (0: none).
    """

    __slots__ = ("_cache", "_cache_blocks", "_entries", "_max_header_list_size", "_max_table_size",
                 "_table_size", "_used")

    def __init__(self, max_table_size: int = DEFAULT_TABLE_SIZE, max_header_list_size: int = 65536,
                 cache_blocks: int = 0) -> None:
        if max_table_size < 0 or max_header_list_size < 0 or cache_blocks < 0:
            raise ValueError("HpackDecoder limits must not be negative")
        self._max_table_size = max_table_size
        self._table_size = max_table_size
        self._max_header_list_size = max_header_list_size
        self._entries: deque[tuple[str, str]] = deque()  # newest first: index 62 is _entries[0]
        self._used = 0
        self._cache_blocks = cache_blocks
        self._cache: dict[bytes, tuple[tuple[str, str], ...]] = {}

    # --- table state ----------------------------------------------------------------------------

    @property
    def max_table_size(self) -> int:
        """Largest dynamic table size the encoder may choose (the receiver's SETTINGS value)."""
        return self._max_table_size

    @max_table_size.setter
    def max_table_size(self, value: int) -> None:
        if value < 0:
            raise ValueError("max_table_size must not be negative")
        self._max_table_size = value
        self._cache.clear()  # the end-of-block check depends on it

    @property
    def max_header_list_size(self) -> int:
        """Largest decoded header list accepted: name + value octets + 32 per field, added up."""
        return self._max_header_list_size

    @max_header_list_size.setter
    def max_header_list_size(self, value: int) -> None:
        if value < 0:
            raise ValueError("max_header_list_size must not be negative")
        self._max_header_list_size = value
        self._cache.clear()  # cached lists passed the old limit

    @property
    def table_size(self) -> int:
        """Current maximum size of the dynamic table, as the encoder last set it."""
        return self._table_size

    @property
    def table_used(self) -> int:
        """Octets the dynamic table holds now (RFC 7541 section 4.1 accounting)."""
        return self._used

    @property
    def dynamic_table(self) -> list[tuple[str, str]]:
        """The dynamic table entries, newest (index 62) first."""
        return list(self._entries)

    # --- decoding -------------------------------------------------------------------------------

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """Decode one complete header block into `(name, value)` pairs, in order.

        Raises an `HpackError` subclass (and nothing else) when the block is malformed.
        """
        if type(block) is not bytes:
            block = bytes(block)
        cache = self._cache
        if cache:
            hit = cache.get(block)
            if hit is not None:
                return list(hit)
        entries = self._entries
        static = _STATIC_BY_INDEX
        fields: list[tuple[str, str]] = []
        append = fields.append
        end = len(block)
        pos = 0
        neutral = True  # no insertion, no size update
        try:
            while pos < end:
                first = block[pos]
                pos += 1
                if first & 0x80:  # indexed field (section 6.1)
                    index = first & 0x7F
                    if index == 0x7F:
                        index, pos = _continued_integer(block, pos, index)
                    if 0 < index <= _STATIC_COUNT:
                        append(static[index])
                    elif 0 <= index - _FIRST_DYNAMIC < len(entries):
                        append(entries[index - _FIRST_DYNAMIC])
                    else:
                        self._entry(index)  # raises HpackIndexError
                    continue
                if first & 0x40:  # literal with incremental indexing (6.2.1)
                    index = first & 0x3F
                    if index == 0x3F:
                        index, pos = _continued_integer(block, pos, index)
                    indexing = True
                elif first & 0x20:  # dynamic table size update (6.3)
                    size = first & 0x1F
                    if size == 0x1F:
                        size, pos = _continued_integer(block, pos, size)
                    self._size_update(size, bool(fields))
                    neutral = False
                    continue
                else:  # literal without indexing (6.2.2) or never indexed (6.2.3)
                    index = first & 0x0F
                    if index == 0x0F:
                        index, pos = _continued_integer(block, pos, index)
                    indexing = False
                if not index:
                    name, pos = _string(block, pos, end)
                    name = name.lower()
                elif index <= _STATIC_COUNT:
                    name = static[index][0]
                else:
                    name = self._entry(index)[0]
                value, pos = _string(block, pos, end)
                field = (name, value)
                append(field)
                if indexing:
                    self._insert(field)
                    neutral = False
        except IndexError:  # only `block[pos]` raises it: the block ended inside a representation
            raise HpackTruncatedError(f"header block of {end} octets ends inside a field representation") \
                from None
        if self._table_size > self._max_table_size:
            raise HpackTableSizeError(f"dynamic table size {self._table_size} is over the allowed "
                                      f"{self._max_table_size} and the block did not lower it")
        if fields:
            size = ENTRY_OVERHEAD * len(fields) + sum([len(name) + len(value) for name, value in fields])
            if size > self._max_header_list_size:
                raise HpackHeaderListTooLarge(f"decoded header list of {len(fields)} fields and {size} "
                                              f"octets is over the limit of {self._max_header_list_size}")
        if neutral and self._cache_blocks:
            if len(cache) >= self._cache_blocks:
                cache.clear()
            cache[block] = tuple(fields)
        return fields

    def _entry(self, index: int) -> tuple[str, str]:
        """The field at a table index (static or dynamic)."""
        if 0 < index <= _STATIC_COUNT:
            return _STATIC_BY_INDEX[index]
        offset = index - _FIRST_DYNAMIC
        if 0 <= offset < len(self._entries):
            return self._entries[offset]
        if not index:
            raise HpackIndexError("index 0 is not a table index")
        raise HpackIndexError(f"index {index} is not in the table (61 static + {len(self._entries)} "
                              "dynamic entries)")

    def _insert(self, field: tuple[str, str]) -> None:
        """Add an entry, evicting the oldest ones first (section 4.4).

        Sizes are taken from the decoded strings: latin-1 decoding and lower-casing keep one
        character per octet, so their lengths are the octet counts the RFC means.
        """
        self._cache.clear()
        entries = self._entries
        size = len(field[0]) + len(field[1]) + ENTRY_OVERHEAD
        if size > self._table_size:  # larger than the whole table: empties it, is not added
            entries.clear()
            self._used = 0
            return
        used = self._used + size
        limit = self._table_size
        while used > limit:
            name, value = entries.pop()
            used -= len(name) + len(value) + ENTRY_OVERHEAD
        entries.appendleft(field)
        self._used = used

    def _size_update(self, size: int, after_field: bool) -> None:
        if after_field:
            raise HpackTableSizeError("dynamic table size update after a header field (it must open the block)")
        if size > self._max_table_size:
            raise HpackTableSizeError(f"dynamic table size update to {size} is over the allowed "
                                      f"{self._max_table_size}")
        self._cache.clear()
        self._table_size = size
        entries = self._entries
        used = self._used
        while used > size:
            name, value = entries.pop()
            used -= len(name) + len(value) + ENTRY_OVERHEAD
        self._used = used
