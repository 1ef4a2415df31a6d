"""CPU time and memory of processes, from /proc (Linux): a server and its worker processes."""

import os
from pathlib import Path


def process_usage(pid: int) -> tuple[float, int] | None:
    """(user + system CPU seconds, resident bytes) of a process; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (every thread's, as /proc lists them per thread)."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a process and of its children now alive (a server's workers)."""
    own = process_usage(pid)
    if own is None:
        return None
    return own[0] + sum(usage[0] for c in child_pids(pid) if (usage := process_usage(c)))
