"""Where the machine's CPU goes during one point: CPU seconds per wall second
(cores) of each server process, read from /proc before and after. Triton's
process group is split into `tritonserver` itself and its Python-backend
stubs (the local stand-in for the native ONNX Runtime backend); so is the
second Triton, the one with the response cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, int, str, float] | None:
    """(process group, parent, command name, CPU seconds) of one process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[2]), int(fields[1]), name, (int(fields[11]) + int(fields[12])) / TICK


class CpuMeter:
    """`names`: a label per process id, which its child processes share (the
    workers of a server that forks them); `tritons`: a label per Triton
    process group, whose stubs are counted apart as `<label> stubs`."""

    def __init__(self, names: dict[int, str], tritons: dict[int, str]) -> None:
        self.names = names
        self.tritons = tritons

    def _label(self, pid: int, group: int, parent: int, name: str) -> str | None:
        if pid in self.names:
            return self.names[pid]
        if parent in self.names:
            return self.names[parent]
        if group in self.tritons:
            return self.tritons[group] + (" stubs" if name.startswith("triton_python") else "")
        return None

    def snapshot(self) -> tuple[float, dict[int, tuple[str, float]]]:
        taken = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            stat = _stat(entry.name)
            if stat is None:
                continue
            label = self._label(int(entry.name), *stat[:3])
            if label is not None:
                taken[int(entry.name)] = (label, stat[3])
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
