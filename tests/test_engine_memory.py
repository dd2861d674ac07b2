"""The engine fixes glibc's mmap threshold, so freed large arrays leave the resident memory."""

import ctypes
import ctypes.util
import subprocess
import sys
import textwrap

from stemnmf.engine import Engine
from stemnmf.engine.memory import MMAP_THRESHOLD, bound_heap

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    if sys.argv[1] == "bounded":
        from stemnmf.engine.memory import bound_heap
        assert bound_heap()

    def rss():
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024

    # glibc maps a 20 MiB array and, when it is freed, raises its threshold to 20 MiB; a 16 MiB
    # array then comes from the heap, and a small one allocated after it keeps the freed pages there
    first = np.ones(20 << 20, np.uint8); del first
    base = rss()
    second = np.ones(16 << 20, np.uint8)
    pin = np.ones(200_000, np.uint8)
    del second
    print(rss() - base)
    """
)


def _growth(mode):
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_an_engine_fixes_the_threshold_once():
    Engine(progress=False)
    assert bound_heap() is True  # already set in this process: still reported as set
    assert MMAP_THRESHOLD == 8 * 1024**2


def test_freed_large_arrays_leave_the_resident_memory_with_the_threshold_fixed():
    assert ctypes.util.find_library("c")  # the machines this project runs on are glibc Linux
    free = _growth("free")
    bounded = _growth("bounded")
    assert bounded < 2, f"a freed 16 MiB array kept {bounded:.1f} MiB resident with the threshold fixed"
    assert free > 12, f"glibc's own threshold kept only {free:.1f} MiB of a freed 16 MiB array (the test's premise)"
