"""Give memory back to the system after a burst of large requests (glibc malloc settings).

By default glibc raises its mmap threshold after large blocks are freed, so the next large
request buffers come from the heap and stay in the process after the burst; and each thread
that allocates gets an arena of its own. Fixing the threshold and capping the arenas keeps
the resident size of the server flat across floods (benchmarks/flood.py measures it).
"""

import ctypes
import ctypes.util
import logging

log = logging.getLogger("serving.memory")

M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value, no longer raised
ARENA_MAX = 2


def return_freed_memory_to_the_system() -> bool:
    """Set glibc's malloc options for this process; False where libc is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    applied = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    applied = mallopt(M_ARENA_MAX, ARENA_MAX) == 1 and applied
    log.debug("malloc settings", extra={"applied": applied})
    return applied
