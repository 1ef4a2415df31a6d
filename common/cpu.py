"""CPU, from /proc and /sys (Linux): the cores this process may use, the CPU time and memory
of processes (a server and its workers), and how busy the whole machine is."""

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPUINFO = Path("/proc/cpuinfo")


def cpuinfo_field(name: str, cpuinfo: Path = CPUINFO) -> str | None:
    """The value of the first `name : value` line of /proc/cpuinfo ("model name", "flags"),
    or None where there is no such line or file."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> float | None:
    """The container's CPU limit in cores (a Kubernetes `limits.cpu`), or None if unlimited:
    cgroup v2's cpu.max ("200000 100000" = 2 cores), else v1's quota and period."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        return None if quota <= 0 else quota / int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """Cores this process may use: its affinity mask, narrowed by a container's CPU limit
    (which the mask does not show: a pod limited to 2 CPUs on a 64-core node sees 64)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return cores if limit is None else max(1, min(cores, math.ceil(limit)))


def share_of_cores(processes: int) -> int:
    """The cores each of `processes` processes gets of the usable ones (at least one)."""
    return max(1, usable_cores() // processes)


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


def machine_cpu_times() -> tuple[float, float]:
    """(busy, idle) seconds of all cores together since boot, from /proc/stat."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / ticks, idle / ticks
