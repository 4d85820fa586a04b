"""trainer.cpu_allocator: with ``keep`` a burst of freed activations is reused instead of faulted in again."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mfas.engine.allocator import _libc, apply_allocator
from mfas.engine.config import validate_config
from mfas.errors import ConfigError

BURST = textwrap.dedent("""
    import ctypes, resource, sys
    from mfas.engine.allocator import _libc, apply_allocator
    kept = apply_allocator(sys.argv[1])
    libc = _libc()
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 blocks of 1 to 20 MiB, written, then freed last first, as a backward pass frees a micro-batch's
    # activations; through the C library directly, so that no other allocation lands between them
    sizes = [(1 << 20, 4 << 20, 12 << 20, 20 << 20)[(7 * i) % 4 if i % 3 else i % 4] for i in range(64)]
    def burst():
        blocks = [libc.malloc(n) for n in sizes]
        for p, n in zip(blocks, sizes):
            ctypes.memset(p, 1, n)
        for p in reversed(blocks):
            libc.free(p)
    burst(); burst()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        burst()
    print(int(kept), sum(sizes) // 4096, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
""")



def _faults(mode: str) -> tuple[bool, int, int]:
    """(whether freed memory is kept, pages of one burst, minor page faults of three bursts)"""
    out = subprocess.run([sys.executable, "-c", BURST, mode], capture_output=True, text=True, check=True)
    kept, pages, faults = out.stdout.split()
    return kept == "1", int(pages), int(faults)


@pytest.mark.skipif(_libc() is None, reason="the allocator setting applies to glibc only")
def test_keep_reuses_freed_memory_where_glibc_returns_it():
    kept, pages, keep = _faults("keep")
    system_kept, _, system = _faults("system")
    assert kept and not system_kept
    # glibc's own thresholds give the freed blocks back, so a later burst faults its pages in again
    assert system > pages, (system, pages)
    assert keep < pages / 10, (keep, pages)


def test_bad_allocator_names_the_key():
    with pytest.raises(ValueError, match="cpu_allocator"):
        apply_allocator("jemalloc")
    with pytest.raises(ConfigError, match="cpu_allocator"):
        validate_config({"name": "x", "protocol": "sim/in/C", "model": {"name": "cnn-concat-tiny"},
                         "trainer": {"cpu_allocator": "jemalloc"}})
