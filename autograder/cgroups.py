"""Limits for a sandbox as a whole: one control group per sandbox.

Per-process limits (rlimits) let a submission hold memory no process is charged
for (``memfd_create``, shared memory, files in its tmpfs) or spread it over many
processes each under the limit.  A control group counts every page its
processes touch, those included, and every process it holds; it also caps the
whole sandbox at one CPU, so a submission that spins up busy children cannot
slow the students graded beside it.

cgroup v2 is used where its memory, pids and cpu controllers are available
(``/sys/fs/cgroup/cgroup.controllers``); otherwise the cgroup v1 hierarchies
``/sys/fs/cgroup/{memory,pids,cpu}``.  Where neither can be written (no root,
a read-only cgroupfs), ``SandboxGroup.create`` returns None and the sandbox
keeps its per-process limits only; ``grades.csv``'s ``sandbox`` column says so.

Groups live under ``autograder/`` in each hierarchy and are named after the
grading process, so a later run removes those of graders that were killed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "autograder"
#: CPU time a sandbox may use per period: one CPU.
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class Layout:
    """Where the controllers are: one folder per controller (v1), or one for all (v2)."""

    version: int
    memory: Path
    pids: Path
    cpu: Path

    def folders(self) -> list[Path]:
        return list(dict.fromkeys((self.memory, self.pids, self.cpu)))


@lru_cache(maxsize=None)
def layout() -> Layout | None:
    """The writable cgroup layout here, or None."""
    unified = ROOT / "cgroup.controllers"
    if unified.is_file():
        controllers = set(unified.read_text().split())
        if {"memory", "pids", "cpu"} <= controllers and _writable(ROOT):
            _enable_v2_controllers(ROOT / PARENT)
            return Layout(2, ROOT / PARENT, ROOT / PARENT, ROOT / PARENT)
    folders = {name: ROOT / name for name in ("memory", "pids", "cpu")}
    if all((folder / "cgroup.procs").is_file() for folder in folders.values()) and all(_writable(f) for f in folders.values()):
        return Layout(1, folders["memory"] / PARENT, folders["pids"] / PARENT, folders["cpu"] / PARENT)
    return None


def _writable(folder: Path) -> bool:
    probe = folder / PARENT
    try:
        probe.mkdir(exist_ok=True)
    except OSError:
        return False
    return os.access(probe, os.W_OK)


def _enable_v2_controllers(parent: Path) -> None:
    try:
        parent.mkdir(exist_ok=True)
        (ROOT / "cgroup.subtree_control").write_text("+memory +pids +cpu")
        (parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
    except OSError:
        pass


def _write(path: Path, value: object) -> bool:
    try:
        path.write_text(str(value))
        return True
    except OSError:
        return False


def _read_int(path: Path, key: str | None = None) -> int:
    try:
        text = path.read_text()
    except OSError:
        return 0
    if key is None:
        try:
            return int(text.split()[0])
        except (IndexError, ValueError):
            return 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return 0


class SandboxGroup:
    """One sandbox's control group (a folder in each hierarchy)."""

    def __init__(self, layout: Layout, name: str) -> None:
        self.layout = layout
        self.name = name
        self.paths = [folder / name for folder in layout.folders()]

    @classmethod
    def create(cls, kind: str, memory_bytes: int, processes: int) -> "SandboxGroup | None":
        """A new group limited to ``memory_bytes`` and ``processes`` and one CPU, or None where groups are unavailable."""
        found = layout()
        if found is None:
            return None
        group = cls(found, f"{kind}-{os.getpid()}-{time.monotonic_ns()}")
        try:
            for path in group.paths:
                path.mkdir(parents=True)
        except OSError:
            group.remove()
            return None
        if not (group.set_memory(memory_bytes) and group._set_pids(processes) and group._set_cpu()):
            group.remove()
            return None
        return group

    # -- limits ----------------------------------------------------------------

    def set_memory(self, limit: int) -> bool:
        if self.layout.version == 2:
            return _write(self._path("memory", "memory.max"), limit) and _write(self._path("memory", "memory.swap.max"), 0)
        memory = self.layout.memory / self.name
        _write(memory / "memory.memsw.limit_in_bytes", -1)  # lift before lowering, whatever the order
        ok = _write(memory / "memory.limit_in_bytes", limit)
        _write(memory / "memory.memsw.limit_in_bytes", limit)  # no swap either, where the kernel accounts it
        return ok

    def _set_pids(self, processes: int) -> bool:
        return _write(self._path("pids", "pids.max"), processes)

    def _set_cpu(self) -> bool:
        if self.layout.version == 2:
            return _write(self._path("cpu", "cpu.max"), f"{CPU_PERIOD_US} {CPU_PERIOD_US}")
        cpu = self.layout.cpu / self.name
        return _write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US) and _write(cpu / "cpu.cfs_quota_us", CPU_PERIOD_US)

    def _path(self, controller: str, file: str) -> Path:
        return getattr(self.layout, controller) / self.name / file

    # -- membership and accounting ---------------------------------------------

    def join(self) -> None:
        """Move the calling process into the group (from a child before exec: ``preexec_fn``)."""
        self.add(os.getpid())

    def add(self, pid: int) -> None:
        """Move process ``pid`` into the group; processes it starts from then on are in it too."""
        for path in self.paths:
            (path / "cgroup.procs").write_text(str(pid))

    def memory_limit(self) -> int:
        name = "memory.max" if self.layout.version == 2 else "memory.limit_in_bytes"
        return _read_int(self._path("memory", name))

    def oom_kills(self) -> int:
        """How many processes the kernel has killed for the group's memory limit so far."""
        if self.layout.version == 2:
            return _read_int(self._path("memory", "memory.events"), "oom_kill")
        return _read_int(self._path("memory", "memory.oom_control"), "oom_kill")

    def remove(self) -> None:
        """Remove the group's folders; the processes in it must have ended."""
        for path in self.paths:
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)  # the last process is still being torn down


def sweep_leftovers() -> int:
    """Remove the groups of grading processes that are gone; how many were removed."""
    found = layout()
    if found is None:
        return 0
    removed = 0
    for folder in found.folders():
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            parts = entry.name.split("-")
            if not entry.is_dir() or len(parts) < 3 or not parts[1].isdigit():
                continue
            try:
                os.kill(int(parts[1]), 0)
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            try:
                for pid in (entry / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), 9)
                    except (ProcessLookupError, ValueError):
                        pass
                entry.rmdir()
                removed += 1
            except OSError:
                pass
    return removed
