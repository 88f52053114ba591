"""Real measurements of the host for heartbeats."""

from __future__ import annotations

import os
from pathlib import Path

_MEMINFO = Path("/proc/meminfo")


def cpu_load() -> float:
    """The 1-minute load average divided by the number of cores (1.0 = every core busy)."""
    try:
        load_1m = os.getloadavg()[0]
    except OSError:  # not available on this platform
        return 0.0
    return load_1m / (os.cpu_count() or 1)


def memory_available_bytes(meminfo: Path = _MEMINFO) -> int:
    """MemAvailable from /proc/meminfo; 0 when the host does not expose it."""
    try:
        with meminfo.open() as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    fields = line.split()
                    return int(fields[1]) * (1024 if fields[2:] == ["kB"] else 1)
    except (OSError, ValueError, IndexError):
        pass
    return 0
