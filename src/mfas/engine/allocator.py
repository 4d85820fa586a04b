"""How the host's C allocator treats memory that training frees (``trainer.cpu_allocator``).

On the CPU, PyTorch takes every tensor from the C library's ``malloc`` and gives it back at once. glibc returns
large freed blocks to the kernel (``munmap``, or trimming the heap's top once more than ``M_TRIM_THRESHOLD`` is free
there), so the activations of the next micro-batch are new pages that the kernel must fault in and zero again.
For full-size MMDA on 2 cores that was 630,000 page faults and 3.3 s of system time per two micro-batches of 3
(``docs/benchmarks.md``). ``keep`` raises both thresholds, so that what a step frees stays with the process and the
next step reuses it; the resident size then stays near the step's peak instead of falling between steps.

Only glibc is tuned (Linux); elsewhere, and where ``mallopt`` refuses a value, nothing changes and the caller is
told so. The setting holds for the whole process (and for workers forked from it) and cannot be undone to glibc's
adaptive default; it changes no result, only where freed memory goes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: the largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); blocks above it stay mmapped
MMAP_THRESHOLD_MAX = 32 << 20
#: free memory kept at the heap's top before glibc trims it (mallopt takes an int)
TRIM_THRESHOLD = (1 << 31) - 1

ALLOCATORS = ("keep", "system")
_applied: str | None = None


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu = libc.gnu_get_libc_version
    except (OSError, AttributeError):  # musl and other C libraries have no gnu_get_libc_version
        return None
    gnu.restype = ctypes.c_char_p
    return libc


def keep_freed_memory() -> bool:
    """Keep freed blocks of up to 32 MiB, and up to 2 GiB free at the heap's top, in the process (glibc ``mallopt``).
    True when glibc took both settings (or they were taken before in this process), False where they cannot apply."""
    global _applied
    if _applied == "keep":
        return True
    libc = _libc()
    if libc is None:
        log.debug("cpu_allocator keep: not glibc; the C allocator is left as it is")
        return False
    # the mmap threshold first: setting either one ends glibc's adaptive thresholds
    ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(libc.mallopt(_M_TRIM_THRESHOLD,
                                                                                          TRIM_THRESHOLD))
    if ok:
        _applied = "keep"
    else:
        log.warning("cpu_allocator keep: glibc refused mallopt; freed memory goes back to the kernel as before")
    return ok


def apply_allocator(name: str) -> bool:
    """Apply ``trainer.cpu_allocator``: ``keep`` (:func:`keep_freed_memory`) or ``system`` (change nothing).
    Returns whether the process now keeps freed memory."""
    if name not in ALLOCATORS:
        raise ValueError(f"cpu_allocator must be one of {ALLOCATORS}, got {name!r}")
    if name == "keep":
        return keep_freed_memory()
    return _applied == "keep"
