"""ssps_ext.allocator: glibc's thresholds raised in-process, so a large
tensor comes from the heap instead of its own mmap."""

import ctypes
import json
import os
import subprocess
import sys

import pytest

from ssps_ext.allocator import USER_SETTINGS, keep_freed_buffers

PROBE = """
import ctypes, json, sys
import torch
from ssps_ext.allocator import keep_freed_buffers

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
outcome = keep_freed_buffers(int(sys.argv[1]))
x = torch.ones(16 * 2**20)  # 64 MiB
info = libc.mallinfo2()
print(json.dumps({"outcome": outcome, "mmapped": info.hblkhd, "heap": info.arena}))
"""


def probe(limit, **env):
    clean = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}
    done = subprocess.run([sys.executable, "-c", PROBE, str(limit)], capture_output=True, text=True,
                          env={**clean, **env}, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def has_mallinfo2():
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not has_mallinfo2(), reason="needs glibc >= 2.33 (mallinfo2) to see where a block lives")
def test_a_large_tensor_lives_in_the_heap_once_the_thresholds_are_raised():
    default = probe(0)
    raised = probe(2**30)
    assert default["outcome"] == "off" and default["mmapped"] >= 64 * 2**20  # its own mmap
    assert raised["outcome"] == "set" and raised["mmapped"] < 64 * 2**20 and raised["heap"] >= 64 * 2**20
    mine = probe(2**30, MALLOC_TRIM_THRESHOLD_="0")  # the user's setting wins: not touched
    assert mine["outcome"] == "environment" and mine["mmapped"] >= 64 * 2**20


def test_zero_keeps_the_defaults_and_a_negative_limit_is_an_error():
    assert keep_freed_buffers(0) == "off"
    with pytest.raises(ValueError, match="malloc_keep_bytes"):
        keep_freed_buffers(-1)
