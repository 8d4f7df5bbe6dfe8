"""Keep freed activation buffers inside the training process (glibc malloc).

A training step frees and re-allocates the same large activation and
gradient buffers at every step. glibc's malloc serves a request above its
mmap threshold (128 KiB, raised dynamically to at most 32 MiB) with a fresh
``mmap`` and unmaps it again on ``free``, and it trims the top of the heap
above its trim threshold; the buffers are then faulted in page by page at
every step. Measured on the 2-core development CPU (issue 11): an ECAPA-TDNN
(C = 128) step on one 128-row batch took 1.8-1.9 s with glibc's defaults
and 0.98 s with both thresholds raised through the environment
(``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_``).

``keep_freed_buffers`` raises both thresholds from inside the process with
``mallopt``, so ``python train.py ...`` and ``torchrun`` get the same
without any environment variable; loader workers, forked afterwards,
inherit the setting. Nothing changes numerically: only where freed memory
goes. The cost is memory: up to ``limit`` bytes of freed blocks stay with
the process instead of returning to the system.
"""

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
INT_MAX = 2**31 - 1  # mallopt takes an int


def keep_freed_buffers(limit):
    """Sets glibc's mmap and trim thresholds to ``limit`` bytes (at most
    2**31 - 1) for this process; ``limit`` 0 keeps glibc's defaults.

    Returns what happened: "set"; "off" (limit 0); "environment" (the user
    set the thresholds or GLIBC_TUNABLES: theirs are kept); "unsupported"
    (not glibc, or mallopt refused).
    """
    limit = int(limit)
    if limit < 0:
        raise ValueError(f"malloc_keep_bytes must be >= 0 (0 = glibc defaults), got {limit}")
    if limit == 0:
        return "off"
    if any(name in os.environ for name in USER_SETTINGS):
        return "environment"
    if not sys.platform.startswith("linux"):
        return "unsupported"
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and other C libraries
        return "unsupported"
    value = ctypes.c_int(min(limit, INT_MAX))
    done = libc.mallopt(M_MMAP_THRESHOLD, value) == 1 and libc.mallopt(M_TRIM_THRESHOLD, value) == 1
    outcome = "set" if done else "unsupported"
    logger.info("glibc malloc: mmap and trim thresholds %s (%d bytes)", outcome, value.value)
    return outcome
