"""How the C library's allocator treats the large blocks tensors on the CPU take.

With glibc (Linux), a block above 32 MiB (most caches, activations and gradients here)
is mapped from the kernel when it is allocated and unmapped when freed, so the next
tensor of that size faults in every page again, zeroed by the kernel. A method that
allocates and frees such tensors in every layer of every pass spends much of its time
there (on the 2-core benchmark machine, a third of ``discover --method eap``'s CPU time
was the kernel's). :func:`keep_freed_memory` has glibc take large blocks from its heap
and keep what is freed for the next allocation; the command line sets it for its own
process (a library does not change its host's allocator). Elsewhere, or where the user
set glibc's own ``MALLOC_*`` variables, nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
KEEP_FREED_BYTES = 2**31 - 1  # free memory at the heap's top kept (mallopt takes an int)


def _glibc() -> ctypes.CDLL | None:
    """The process's C library, where it is glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    names = ("gnu_get_libc_version", "mallopt", "malloc_trim")
    return libc if all(hasattr(libc, name) for name in names) else None


def keep_freed_memory() -> bool:
    """Serve large blocks from glibc's heap and keep freed memory for reuse, in this
    process; False where nothing was changed (not glibc, or ``MALLOC_*`` set)."""
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    libc = _glibc()
    if libc is None:
        return False
    no_maps = libc.mallopt(M_MMAP_MAX, 0)
    return bool(no_maps and libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def release_freed_memory() -> None:
    """Give the memory glibc keeps free back to the system (for a measurement of the
    memory a step takes from there)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
