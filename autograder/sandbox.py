"""Start the process that runs a student's code, confined, and kill all of it afterwards.

With bubblewrap (``bwrap``) the worker gets new PID, network, IPC and UTS
namespaces, a read-only view of the Python environment and of this package,
small size-limited tmpfs folders for /tmp, its home and its working folder
(holding read-only copies of that one submission's files) and nothing else:
no source/, no gradebook, no other students, no network.  When started as
root it drops to an unprivileged user id of its own, so the process limit
counts only its processes.  Killing bwrap kills the namespace's init, and
with it every process in the namespace, detached or not; bwrap also dies with
the grader (``--die-with-parent``).

Without bubblewrap the worker still gets its rlimits, its own session and a
process-group kill, but it can read what the grader's user can read.  That
mode is announced loudly and written into grades.csv.
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import course_checks

from . import cgroups, wire

if TYPE_CHECKING:
    from . import zygote

BUBBLEWRAP = "bubblewrap"
RLIMITS_ONLY = "rlimits only (no bubblewrap)"

#: Environment variable a TA (or a test) can set to "bwrap" or "none" to skip detection.
MODE_VARIABLE = "AUTOGRADER_SANDBOX"

_SUBMISSION_DIR = "/submission"
_HOME = "/home/student"
#: A submission folder may bring at most this much into the sandbox.
MAX_SUBMISSION_FILES = 200
MAX_SUBMISSION_BYTES = 50 * 2**20


@dataclass(frozen=True)
class Limits:
    """Everything a submission may use.  Wall-clock limits are enforced by the grader."""

    cell_seconds: float = 30.0
    notebook_seconds: float = 300.0
    startup_seconds: float = 120.0
    memory_bytes: int = 4 * 2**30
    processes: int = 64
    file_bytes: int = 64 * 2**20
    output_chars: int = 100_000
    frame_bytes: int = 256 * 2**20
    restarts: int = 3
    tmpfs_bytes: int = 256 * 2**20
    #: All the outputs of one notebook together (text and images), as written into autograded/.
    notebook_output_bytes: int = 32 * 2**20

    @property
    def grading_seconds(self) -> float:
        """Wall-clock time for one notebook as a whole: the student's running time, starting
        sandboxes, and the grader's own work on the values the student's code sent back."""
        return self.notebook_seconds + self.startup_seconds + 60.0

    def submission_seconds(self, notebooks: int) -> float:
        """The hard wall-clock limit on grading one submission of ``notebooks`` notebooks (see pool.py):
        each notebook's own budget, which execute.run_notebook enforces gently, plus time to start and record."""
        return max(notebooks, 1) * self.grading_seconds + 60.0

    def for_worker(self) -> dict:
        return {
            "memory_bytes": self.memory_bytes,
            "processes": self.processes,
            "file_bytes": self.file_bytes,
            "cpu_seconds": int(2 * self.notebook_seconds + self.startup_seconds + 60),
        }


#: What a fresh worker holds before the student's code runs (Python, torch, the engine), on top
#: of the submission's memory limit in its control group.
WORKER_BASE_BYTES = 1 * 2**30


class SandboxError(Exception):
    """The sandbox could not be started at all (a grader problem, not the student's)."""


@lru_cache(maxsize=None)
def _probe_bubblewrap() -> str | None:
    """None if bwrap can build our sandbox here, else why not."""
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (apt-get install bubblewrap)"
    with tempfile.TemporaryDirectory(prefix="autograder-probe-") as folder:
        uid = sandbox_uid() if os.getuid() == 0 else None
        command = _bwrap_command(Path(folder), Limits(), [sys.executable, "-I", "-c", "pass"], uid)
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"bwrap failed to start: {err}"
    if result.returncode != 0:
        return f"bwrap failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}"
    return None


def sandbox_mode() -> str:
    """BUBBLEWRAP where it works, else RLIMITS_ONLY (with a loud warning, once)."""
    wanted = os.environ.get(MODE_VARIABLE, "auto")
    if wanted == "none":
        _warn_once(f"{MODE_VARIABLE}=none was set")
        return RLIMITS_ONLY
    problem = _probe_bubblewrap()
    if problem is None:
        return BUBBLEWRAP
    if wanted == "bwrap":
        raise SandboxError(f"{MODE_VARIABLE}=bwrap but {problem}")
    _warn_once(problem)
    return RLIMITS_ONLY


@lru_cache(maxsize=None)
def _warn_once(problem: str) -> None:
    banner = "!" * 78
    print(
        f"{banner}\nautograder: WARNING: student code runs WITHOUT a sandbox: {problem}.\n"
        "It gets resource limits and is killed afterwards, but it can read and write\n"
        "everything this user can (source/, the gradebook, other students).\n"
        f"grades.csv records this in its 'sandbox' column.\n{banner}",
        file=sys.stderr,
    )


def _code_paths() -> list[Path]:
    """Folders the worker imports this package and course_checks from."""
    package = Path(__file__).resolve().parent
    checks = Path(course_checks.__file__).resolve()
    return [package, checks]


def _ancestors(path: Path) -> list[Path]:
    return [p for p in reversed(path.parents) if str(p) != "/"]


def _bwrap_command(
    scratch: Path, limits: Limits, argv: list[str], uid: int | None, caps: tuple[str, ...] = (), device: str = "cpu"
) -> list[str]:
    prefixes = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()}
    executable = Path(sys.executable)
    binds: list[Path] = sorted(prefixes | set(_code_paths()))
    command = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    command += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if uid is not None:
        caps = tuple(caps) + ("CAP_SETUID", "CAP_SETGID")
    for cap in dict.fromkeys(caps):
        command += ["--cap-add", cap]
    command += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib64", "sbin"):
        target = Path("/") / name
        if target.is_symlink():
            command += ["--symlink", os.readlink(target), str(target)]
        elif target.is_dir():
            command += ["--ro-bind", str(target), str(target)]
    command += ["--proc", "/proc", "--dev", "/dev"]
    if device == "cuda":
        # The GPU's device nodes; nothing else of the host's /dev.
        for node in sorted(Path("/dev").glob("nvidia*")):
            command += ["--dev-bind", str(node), str(node)]
    # Shared memory for DataLoader workers and multiprocessing locks.
    command += ["--perms", "1777", "--size", str(limits.tmpfs_bytes // 4), "--tmpfs", "/dev/shm"]
    # /tmp first: the environment or this package may live under /tmp (a CI clone),
    # and binds made after the tmpfs stay visible on top of it.
    size = str(limits.tmpfs_bytes)
    command += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
    made: set[Path] = set()
    for path in binds + [executable.parent]:
        for parent in _ancestors(path):
            if parent not in made and not str(parent).startswith(("/usr", "/proc", "/dev")):
                command += ["--perms", "0755", "--dir", str(parent)]
                made.add(parent)
    for path in binds:
        command += ["--ro-bind", str(path), str(path)]
    command += ["--perms", "1777", "--size", str(16 * 2**20), "--tmpfs", _HOME]
    command += ["--perms", "1777", "--size", size, "--tmpfs", _SUBMISSION_DIR]
    files = scratch / "submission"
    if files.is_dir():
        for entry in sorted(files.iterdir()):
            command += ["--ro-bind", str(entry), f"{_SUBMISSION_DIR}/{entry.name}"]
    command += ["--chdir", _SUBMISSION_DIR, "--clearenv"]
    for key, value in _environment(_HOME, device).items():
        command += ["--setenv", key, value]
    return command + ["--", *argv]


def _environment(home: str, device: str = "cpu") -> dict[str, str]:
    variables = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": "/tmp" if home == _HOME else home,
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": f"{home}/.matplotlib",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if device == "cuda":
        del variables["CUDA_VISIBLE_DEVICES"]
        variables["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # deterministic cuBLAS
    return variables


# -- temporary folders and leftovers -------------------------------------------------
# Every temporary folder carries the pid of the grading process that made it, so a
# later run can remove what a killed one (SIGKILL runs no cleanup) left behind.

TEMP_PREFIX = "autograder-"


def temp_folder(kind: str) -> Path:
    """A new folder in TMPDIR named after ``kind`` and this process."""
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{kind}-{os.getpid()}-"))


def remove_tree(path: Path) -> None:
    """Remove ``path`` whatever a student built in it (any depth, odd modes); never raises."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except (OSError, RecursionError):
        pass
    # rm walks with fts, without recursion limits, and as root ignores modes.
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def sweep_leftovers() -> int:
    """Remove the temporary folders and control groups of grading processes that are gone; how many."""
    removed = cgroups.sweep_leftovers()
    for entry in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*-*"):
        parts = entry.name[len(TEMP_PREFIX):].split("-")
        if len(parts) < 3 or not parts[1].isdigit() or not entry.is_dir() or entry.is_symlink():
            continue
        if not _process_alive(int(parts[1])):
            remove_tree(entry)
            removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent() -> None:
    """Have the kernel SIGKILL this process when its parent ends, however the parent ends."""
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


def prepare_scratch(files: list[tuple[Path, str]]) -> Path:
    """A fresh scratch folder holding copies of ``(path, name)`` regular files."""
    scratch = temp_folder("scratch")
    target = scratch / "submission"
    target.mkdir()
    total = 0
    for path, name in files[:MAX_SUBMISSION_FILES]:
        size = path.stat().st_size
        if total + size > MAX_SUBMISSION_BYTES:
            continue
        total += size
        shutil.copyfile(path, target / name)
    os.chmod(scratch, 0o755)
    os.chmod(target, 0o755)
    for entry in target.iterdir():
        os.chmod(entry, 0o644)
    return scratch


def submission_files(folder: Path, overrides: Path | None) -> list[tuple[Path, str]]:
    """Top-level regular files of a submission folder (no links), with the release's data files on top."""
    chosen: dict[str, Path] = {}
    for base in (folder, overrides):
        if base is None or not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            if entry.is_symlink() or not entry.is_file() or entry.name.startswith("."):
                continue
            if base is overrides and entry.suffix == ".ipynb":
                continue
            chosen[entry.name] = entry
    return [(path, name) for name, path in sorted(chosen.items())]


@dataclass
class Worker:
    """A running worker: the process, its channel and how it ended."""

    process: subprocess.Popen
    channel: socket.socket
    mode: str
    killed_by_us: bool = False
    log_path: Path | None = None
    started: float = field(default_factory=time.monotonic)
    #: The control group the sandbox's processes are counted in (None where groups are unavailable),
    #: its memory-limit kills when the worker started, and whether the worker owns it.
    group: "cgroups.SandboxGroup | None" = None
    oom_kills_at_start: int = 0
    owns_group: bool = False

    def hit_memory_limit(self) -> bool:
        """Whether the kernel killed a process of this sandbox for its memory limit since it started."""
        return self.group is not None and self.group.oom_kills() > self.oom_kills_at_start

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Kill the worker and everything it started; safe to call twice."""
        if self.process.poll() is None:
            self.killed_by_us = True
            try:
                if self.mode == BUBBLEWRAP:
                    # bwrap's death takes the namespace's init, and so every process in it, along.
                    os.kill(self.process.pid, signal.SIGKILL)
                else:
                    os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.mode != BUBBLEWRAP:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            self.channel.close()
        except OSError:
            pass
        if self.owns_group and self.group is not None:
            self.group.remove()

    def how_it_ended(self) -> str:
        """'killed', 'exit N' or 'signal NAME' (only meaningful once it has ended)."""
        code = self.process.poll()
        if self.killed_by_us:
            return "killed"
        if code is None:
            return "running"
        if code < 0:
            return f"signal {signal.Signals(-code).name}"
        if self.mode == BUBBLEWRAP and code > 128:
            return f"signal {signal.Signals(code - 128).name}" if code - 128 in signal.valid_signals() else f"exit {code}"
        return f"exit {code}"

    def startup_log(self) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]


def _threads_of(uid: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if fields.get("Uid", "").split()[:1] == [str(uid)]:
                count += int(fields.get("Threads", "1").strip() or 1)
    return count


def sandbox_uid() -> int:
    """An unprivileged user id for one worker, so its process limit counts only its own processes."""
    return random.SystemRandom().randrange(200_000, 260_000)


#: Environment variable: "0" turns the pre-warmed zygote off (a fresh bwrap per notebook).
ZYGOTE_VARIABLE = "AUTOGRADER_ZYGOTE"
_zygotes: dict[tuple, "zygote.Zygote"] = {}


def uses_zygote(mode: str) -> bool:
    """Fork workers from a warm zygote only where it keeps every guarantee: bwrap, and root for the uids."""
    return mode == BUBBLEWRAP and os.getuid() == 0 and os.environ.get(ZYGOTE_VARIABLE, "1") != "0"


def warm_up(limits: Limits, mode: str, device: str = "cpu", optimizers: bool = True) -> None:
    """Start the zygote now, before the first submission needs it.

    ``optimizers``: whether student code is likely to build torch optimizers
    (see ``worker._warm_first_uses``)."""
    if uses_zygote(mode):
        try:
            _zygote_for(limits, device, optimizers)
        except SandboxError:
            pass  # the first spawn retries and reports


def _zygote_for(limits: Limits, device: str, optimizers: bool | None = None) -> "zygote.Zygote":
    """The running zygote for these limits and device, started if need be.

    ``optimizers`` None takes the running zygote as it is warmed."""
    from . import zygote

    wanted = zygote.Zygote(limits, device, True if optimizers is None else optimizers)
    current = _zygotes.get(wanted.key())
    if current is None or (optimizers is not None and current.optimizers != optimizers):
        for other in list(_zygotes.values()):
            other.stop()
        _zygotes.clear()
        current = _zygotes[wanted.key()] = wanted
    current.limits = limits
    if not current.alive():
        try:
            current.start()
        except zygote.ZygoteError as err:
            raise SandboxError(str(err)) from err
    return current


def stop_zygotes() -> None:
    """End every zygote (and so every process in their sandboxes)."""
    for other in list(_zygotes.values()):
        other.stop()
    _zygotes.clear()


atexit.register(stop_zygotes)


def _worker_config(limits: Limits, uid: int | None, device: str) -> dict:
    worker_limits = limits.for_worker()
    if uid is None and os.getuid() != 0:
        # The process limit counts every process of this user, not just the worker's.
        worker_limits["processes"] += _threads_of(os.getuid())
    return {
        "uid": uid,
        "limits": worker_limits,
        "output_chars": limits.output_chars,
        "frame_bytes": limits.frame_bytes,
        "device": device,
    }


def start_worker(scratch: Path, limits: Limits, mode: str, device: str = "cpu") -> Worker:
    """Start a worker in ``mode`` and wait for its hello (or raise SandboxError)."""
    if uses_zygote(mode):
        return _fork_worker(scratch, limits, device)
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    uid = sandbox_uid() if (mode == BUBBLEWRAP and os.getuid() == 0) else None
    config = dict(_worker_config(limits, uid, device), fd=child_end.fileno())
    roots = sorted({str(p.parent) for p in _code_paths()})
    boot = f"import sys; sys.path[:0] = {roots!r}; from autograder.worker import main; main(sys.argv[1])"
    argv = [sys.executable, "-I", "-B", "-c", boot, json.dumps(config)]
    log_path = scratch / "worker.log"
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
    group = cgroups.SandboxGroup.create("worker", limits.memory_bytes + WORKER_BASE_BYTES, limits.processes + 8)
    join = group.join if group is not None else None
    try:
        if mode == BUBBLEWRAP:
            command = _bwrap_command(scratch, limits, argv, uid, device=device)
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(child_end.fileno(),),
                start_new_session=True, preexec_fn=join,
            )
        else:
            home = scratch / "home"
            home.mkdir(exist_ok=True)
            process = subprocess.Popen(
                argv,
                cwd=scratch / "submission",
                env=_environment(str(home), device),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(child_end.fileno(),),
                start_new_session=True,
                preexec_fn=join,
            )
    except (OSError, subprocess.SubprocessError) as err:
        parent_end.close()
        if group is not None:
            group.remove()
        raise SandboxError(f"could not start the worker: {err}") from err
    finally:
        child_end.close()
        log.close()
    worker = Worker(process, parent_end, mode, log_path=log_path, group=group, owns_group=True)
    return _await_hello(worker, limits)


def _fork_worker(scratch: Path, limits: Limits, device: str) -> Worker:
    from . import zygote

    uid = sandbox_uid()
    try:
        worker = _zygote_for(limits, device).spawn(scratch, limits, uid, _worker_config(limits, uid, device))
    except zygote.ZygoteError as err:
        raise SandboxError(f"the pre-warmed sandbox could not fork a worker: {err}") from err
    return _await_hello(worker, limits)


def _await_hello(worker: Worker, limits: Limits) -> Worker:
    parent_end = worker.channel
    deadline = time.monotonic() + limits.startup_seconds
    try:
        header, _ = wire.recv(parent_end, deadline, max_frame=2**20)
    except (TimeoutError, EOFError, wire.WireError) as err:
        worker.kill()
        raise SandboxError(f"the worker did not start ({type(err).__name__}): {worker.startup_log()[-1500:]}") from err
    if header.get("op") != "hello":
        worker.kill()
        detail = (header.get("error") or {}).get("traceback", "") if isinstance(header, dict) else ""
        raise SandboxError(f"the worker failed to start: {detail[-1500:]}")
    return worker
