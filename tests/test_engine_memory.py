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

    def on_heap(address):
        with open("/proc/self/maps") as fh:
            for line in fh:
                if line.rstrip().endswith("[heap]"):
                    lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
                    if lo <= address < hi:
                        return True
        return False

    # glibc maps a 20 MiB array and, when it is freed, may raise its threshold to 20 MiB; a 16 MiB
    # array then comes from the heap, and a small one allocated after it keeps the freed pages there
    first = np.ones(20 << 20, np.uint8); del first
    base = rss()
    second = np.ones(16 << 20, np.uint8)
    heap = on_heap(second.ctypes.data)
    pin = np.ones(200_000, np.uint8)
    del second
    print(rss() - base, int(heap))
    """
)


def _growth(mode):
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=60, check=True)
    growth, heap = out.stdout.strip().splitlines()[-1].split()
    return float(growth), bool(int(heap))


def test_an_engine_fixes_the_threshold_once():
    Engine(progress=False)
    assert bound_heap() is True  # already set in this process: still reported as set
    assert MMAP_THRESHOLD == 8 * 1024**2


def test_freed_large_arrays_leave_the_resident_memory_with_the_threshold_fixed():
    """With the threshold fixed a 16 MiB array is always mapped on its own and leaves when freed; without
    it, glibc may serve it from the heap and keep it (16 MiB here, though not on every machine)."""
    assert ctypes.util.find_library("c")  # the machines this project runs on are glibc Linux
    growth, heap = _growth("bounded")
    assert not heap, "a 16 MiB array came from the heap with the threshold fixed at 8 MiB"
    assert growth < 2, f"a freed 16 MiB array kept {growth:.1f} MiB resident with the threshold fixed"
