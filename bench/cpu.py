"""Where the machine's CPU goes during one point: CPU seconds per wall second
(cores) of each server process, read from /proc before and after. Triton's
process group is split into `tritonserver` itself and its Python-backend
stubs (the local stand-in for the native ONNX Runtime backend)."""

from __future__ import annotations

import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, str, float] | None:
    """(process group, command name, CPU seconds) of one process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[2]), name, (int(fields[11]) + int(fields[12])) / TICK


class CpuMeter:
    """`names`: a label per process id; a process in the group of `triton_group` is
    counted as `tritonserver` or, for a stub, `triton stubs`."""

    def __init__(self, names: dict[int, str], triton_group: int | None) -> None:
        self.names = names
        self.triton_group = triton_group

    def _label(self, pid: int, group: int, name: str) -> str | None:
        if pid in self.names:
            return self.names[pid]
        if self.triton_group is not None and group == self.triton_group:
            return "triton stubs" if name.startswith("triton_python") else "tritonserver"
        return None

    def snapshot(self) -> tuple[float, dict[int, tuple[str, float]]]:
        taken = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            stat = _stat(entry.name)
            if stat is None:
                continue
            label = self._label(int(entry.name), stat[0], stat[1])
            if label is not None:
                taken[int(entry.name)] = (label, stat[2])
        return time.monotonic(), taken

    @staticmethod
    def cores(before, after) -> dict[str, float]:
        """Cores used per label between two snapshots (a process started in between counts from zero)."""
        (t0, first), (t1, second) = before, after
        out: dict[str, float] = {}
        for pid, (label, seconds) in second.items():
            spent = seconds - first.get(pid, (label, 0.0))[1]
            out[label] = out.get(label, 0.0) + spent
        wall = max(t1 - t0, 1e-9)
        return {label: round(spent / wall, 2) for label, spent in sorted(out.items())}
