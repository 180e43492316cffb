"""glibc's malloc thresholds for the proxy process: large-body buffers from the heap, not mmap.

A proxied model pull moves through buffers of 64-512 KiB (asyncio's receive buffer, h11's,
the reads handed to mitmproxy's layers, TLS plaintext). glibc serves an allocation of 128 KiB or
more with its own `mmap` and returns it with `munmap` on free, so every such buffer costs fresh
pages: page faults and zeroing in the kernel, per read. glibc raises that threshold by itself
after the first large free, but only to the size freed, and by accident of what a process
allocated first: measured here, plain mitmdump took 42,000 page faults per 64 MiB GET with
256 KiB reads and about 140 with the thresholds below (benchmarks/README.md, "Larger reads").

`tune_malloc()` sets M_MMAP_THRESHOLD to 1 MiB (smaller blocks come from the heap) and
M_TRIM_THRESHOLD to 16 MiB (free heap at the top is given back to the system past that), so the
process keeps at most 16 MiB of freed heap for reuse. Setting them switches glibc's dynamic
adjustment off for the process; `restore_malloc()` puts back glibc's starting values (128 KiB
each), not the adjustment. Elsewhere than on glibc (musl, macOS) both do nothing and say so.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 20
TRIM_THRESHOLD = 16 << 20
GLIBC_DEFAULT_THRESHOLD = 128 * 1024  # both thresholds' starting values in glibc


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None when the C library is another one."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    return libc


def glibc_version() -> str | None:
    libc = _libc()
    return None if libc is None else libc.gnu_get_libc_version().decode()


def _set(mmap_threshold: int, trim_threshold: int) -> bool:
    libc = _libc()
    if libc is None:
        return False
    # mallopt returns 1 on success, 0 for a value it refuses
    return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD,
                                                                                        trim_threshold))


def tune_malloc() -> bool:
    """Set the thresholds (see the module docstring); False where the C library is not glibc."""
    return _set(MMAP_THRESHOLD, TRIM_THRESHOLD)


def restore_malloc() -> bool:
    """glibc's starting thresholds again (its dynamic adjustment stays off); False off glibc."""
    return _set(GLIBC_DEFAULT_THRESHOLD, GLIBC_DEFAULT_THRESHOLD)
