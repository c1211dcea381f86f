"""Pre-warmed sandboxed workers: a long-lived "zygote" that forks one fresh worker per notebook.

Starting a worker costs bwrap, a Python start and ``import torch`` (about a
second).  The zygote pays that once: it is one process inside one bubblewrap
sandbox, confined like a worker (same namespaces, same read-only view, same
small tmpfs folders), with torch, numpy, matplotlib, course_checks and the
worker's code already imported.  It never runs student code and never holds a
submission's files between two spawns.

For each notebook the grader sends it one end of a fresh socketpair
(SCM_RIGHTS), the submission's files (their bytes) and a fresh random uid.
The zygote first *sweeps*: it SIGKILLs every process in its PID namespace but
bubblewrap's init and itself (so nothing an earlier submission started
survives, detached or not), and empties /tmp, the home folder, /dev/shm and
/submission.  It writes the files root-owned and read-only into
/submission, then forks.  The child gets a new session and a new IPC
namespace (no SysV or POSIX IPC object of an earlier student is visible),
drops to the uid (losing every capability), sets its rlimits, silences its
standard streams and serves the grader exactly like a worker started from
scratch (``worker.serve_forked``).  With the reply to the spawn the zygote
passes a pidfd of the child, so the grader sees it end without asking; how it
ended (exit code or signal) only the zygote, its parent, can tell.  A worker is never reused: each notebook
and each restart after a crash gets a new fork.

The zygote keeps only the capabilities it needs for that (set uid/gid, kill,
override file permissions and owners, and CAP_SYS_ADMIN for the child's
``unshare(CLONE_NEWIPC)``); it is non-dumpable, so a student process cannot
read its memory or its file descriptors.  Control requests come only from the
grader, over a socket no child keeps.  If the zygote dies or misbehaves the
grader kills its bubblewrap (taking every process in the sandbox along) and
starts a new one.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import sandbox, wire

CONTROL_MAX_FRAME = 128 * 2**20
#: Room for the zygote's own warm-up (torch, matplotlib, a small model) before its worker's limit applies.
WARM_UP_BYTES = 2 * 2**30
_CLEAN_DIRS = ("/tmp", "/home/student", "/dev/shm", "/submission")
_CLONE_NEWIPC = 0x08000000
_PR_SET_DUMPABLE = 4
#: Capabilities the zygote keeps; its children drop all of them.
ZYGOTE_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_CHOWN", "CAP_SYS_ADMIN")


# -- inside the sandbox ----------------------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _others() -> list[int]:
    """Live (non-zombie) processes of this PID namespace other than init and this one."""
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (1, me):
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


class _Zygote:
    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.ended: dict[int, tuple[str, int]] = {}
        self.children: set[int] = set()
        self.pidfd: int | None = None  # sent after the spawn's reply

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._note(pid, status)

    def _note(self, pid: int, status: int) -> None:
        if pid in self.children:
            self.children.discard(pid)
            if os.WIFSIGNALED(status):
                self.ended[pid] = ("signal", os.WTERMSIG(status))
            else:
                self.ended[pid] = ("exit", os.waitstatus_to_exitcode(status))

    def sweep(self) -> bool:
        """Kill every other process in the namespace and empty the writable folders."""
        deadline = time.monotonic() + 10
        while True:
            try:
                os.kill(-1, signal.SIGKILL)  # everything we may signal, except init and ourselves
            except ProcessLookupError:
                pass
            self._reap()
            if not _others():
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        for folder in _CLEAN_DIRS:
            _empty(folder)
        return True

    def spawn(self, header: dict, blobs: list[bytes]) -> dict:
        _, fds, _, _ = socket.recv_fds(self.control, 1, 1)
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            return {"ok": False, "error": "no channel was passed"}
        channel_fd = fds[0]
        try:
            if not self.sweep():
                return {"ok": False, "error": "could not clear the previous submission's processes"}
            names = header.get("files", [])
            if len(names) != len(blobs):
                return {"ok": False, "error": "files and contents do not match"}
            for name, data in zip(names, blobs):
                if not isinstance(name, str) or "/" in name or name in ("", ".", "..") or "\0" in name:
                    return {"ok": False, "error": f"bad file name {name!r}"}
                path = f"/submission/{name}"
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.chmod(path, 0o444)
            pid = os.fork()
            if pid == 0:
                _child(self.control, channel_fd, header)  # never returns
            self.children.add(pid)
            try:
                # The grader polls a pidfd to see the child end without asking us each time.
                self.pidfd = os.pidfd_open(pid)
            except (AttributeError, OSError):
                self.pidfd = None
            return {"ok": True, "pid": pid, "pidfd": self.pidfd is not None}
        finally:
            os.close(channel_fd)

    def status(self, pid: int) -> dict:
        if pid in self.children:
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                got, status = pid, 9
            if got == 0:
                return {"ok": True, "state": "running"}
            self._note(pid, status)
        kind, value = self.ended.get(pid, ("signal", signal.SIGKILL))
        return {"ok": True, "state": kind, "value": value}

    def kill(self, pid: int) -> dict:
        if pid in self.children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        ok = self.sweep()
        return {"ok": ok, **{k: v for k, v in self.status(pid).items() if k != "ok"}}

    def serve(self) -> None:
        wire.send(self.control, {"op": "hello", "pid": os.getpid()})
        while True:
            try:
                header, blobs = wire.recv(self.control, max_frame=CONTROL_MAX_FRAME)
            except EOFError:
                return
            op = header.get("op")
            pid = header.get("pid")
            if op == "spawn":
                reply = self.spawn(header, blobs)
            elif op == "status" and isinstance(pid, int):
                reply = self.status(pid)
            elif op == "kill" and isinstance(pid, int):
                reply = self.kill(pid)
            elif op == "exit":
                self.sweep()
                return
            else:
                reply = {"ok": False, "error": f"unknown request {op!r}"}
            self.ended = {p: v for p, v in list(self.ended.items())[-64:]}
            wire.send(self.control, reply)
            if self.pidfd is not None:
                socket.send_fds(self.control, [b"P"], [self.pidfd])
                os.close(self.pidfd)
                self.pidfd = None


def _empty(folder: str) -> None:
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for name in entries:
        path = os.path.join(folder, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                sandbox.remove_tree(Path(path))
            else:
                os.unlink(path)
        except OSError:
            pass


def _child(control: socket.socket, channel_fd: int, header: dict) -> None:
    """The forked worker: confine, then serve one notebook; never returns to the zygote's loop."""
    code = 1
    try:
        control.close()
        for sig in (signal.SIGCHLD, signal.SIGPIPE, signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        os.setsid()
        if _libc().unshare(_CLONE_NEWIPC) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWIPC) failed")
        os.chdir("/submission")
        from . import worker

        config = dict(header["config"], uid=header["uid"])
        worker.serve_forked(socket.socket(fileno=channel_fd), config)
        code = 0
    except BaseException:  # noqa: BLE001 - the zygote's loop must never run in a child
        code = 70
    finally:
        os._exit(code)


def main(config_json: str) -> None:
    """Entry point inside bubblewrap (see ``Zygote.start``)."""
    config = json.loads(config_json)
    control = socket.socket(fileno=int(config["fd"]))
    _libc().prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    os.environ.setdefault("MPLBACKEND", "Agg")
    from . import worker

    worker.preload(optimizers=bool(config.get("optimizers", True)))
    # Children then never scan (and so never copy) the zygote's own objects in a garbage collection.
    gc.freeze()
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    _Zygote(control).serve()
    os._exit(0)


# -- in the grader ------------------------------------------------------------------


class ZygoteError(Exception):
    pass


class Zygote:
    """The grader's handle on one zygote; restarts it when it is gone."""

    def __init__(self, limits, device: str = "cpu", optimizers: bool = True) -> None:
        self.limits = limits
        self.device = device
        self.optimizers = optimizers
        self.process: subprocess.Popen | None = None
        self.control: socket.socket | None = None
        self.folder: Path | None = None
        #: The control group of the zygote itself: a backstop; each worker it forks gets a group of its own.
        self.group: sandbox.cgroups.SandboxGroup | None = None

    def key(self) -> tuple:
        return (self.limits.tmpfs_bytes, self.device)

    def start(self) -> None:
        self.stop()
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.folder = sandbox.temp_folder("zygote")
        os.chmod(self.folder, 0o755)
        roots = sorted({str(p.parent) for p in sandbox._code_paths()})
        boot = f"import sys; sys.path[:0] = {roots!r}; from autograder.zygote import main; main(sys.argv[1])"
        argv = [sys.executable, "-I", "-B", "-c", boot, json.dumps({"fd": child_end.fileno(), "optimizers": self.optimizers})]
        command = sandbox._bwrap_command(self.folder, self.limits, argv, None, caps=ZYGOTE_CAPS, device=self.device)
        log_path = self.folder / "zygote.log"
        self.group = sandbox.cgroups.SandboxGroup.create("zygote", self.limits.memory_bytes + WARM_UP_BYTES, self.limits.processes + 8)
        with open(log_path, "wb") as log:
            try:
                self.process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(child_end.fileno(),),
                    start_new_session=True, preexec_fn=self.group.join if self.group is not None else None,
                )
            except (OSError, subprocess.SubprocessError) as err:
                parent_end.close()
                self.stop()
                raise ZygoteError(f"could not start the zygote: {err}") from err
            finally:
                child_end.close()
        self.control = parent_end
        try:
            header, _ = wire.recv(parent_end, time.monotonic() + self.limits.startup_seconds, max_frame=2**20)
        except (TimeoutError, EOFError, wire.WireError, OSError) as err:
            log = log_path.read_text(errors="replace")[-1500:]
            self.stop()
            raise ZygoteError(f"the zygote did not start ({type(err).__name__}): {log}") from err
        if header.get("op") != "hello":
            self.stop()
            raise ZygoteError("the zygote did not say hello")


    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None and self.control is not None

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None and self.control is not None:
                try:
                    wire.send(self.control, {"op": "exit"}, deadline=time.monotonic() + 2)
                    self.process.wait(timeout=5)
                except (OSError, TimeoutError, subprocess.TimeoutExpired):
                    pass
            if self.process.poll() is None:
                try:
                    os.kill(self.process.pid, signal.SIGKILL)  # bwrap's death empties the namespace
                except ProcessLookupError:
                    pass
                self.process.wait()
        if self.control is not None:
            self.control.close()
        if self.folder is not None:
            sandbox.remove_tree(self.folder)
        if self.group is not None:
            self.group.remove()
        self.process = self.control = self.folder = self.group = None

    def request(self, header: dict, blobs: list[bytes] = (), fd: int | None = None, seconds: float = 30.0) -> dict:
        if not self.alive():
            raise ZygoteError("the zygote is not running")
        deadline = time.monotonic() + seconds
        try:
            wire.send(self.control, header, list(blobs), deadline)
            if fd is not None:
                socket.send_fds(self.control, [b"F"], [fd])
            reply, _ = wire.recv(self.control, deadline, max_frame=2**20)
            if reply.get("pidfd") is True:
                _, fds, _, _ = socket.recv_fds(self.control, 1, 1)
                reply["pidfd"] = fds[0] if len(fds) == 1 else None
                for extra in fds[1:]:
                    os.close(extra)
        except (TimeoutError, EOFError, wire.WireError, OSError) as err:
            self.stop()
            raise ZygoteError(f"the zygote stopped answering: {err}") from err
        return reply

    def spawn(self, scratch: Path, limits, uid: int, config: dict) -> "ForkedWorker":
        files = scratch / "submission"
        names, blobs = [], []
        if files.is_dir():
            for entry in sorted(files.iterdir()):
                names.append(entry.name)
                blobs.append(entry.read_bytes())
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for attempt in range(2):
                if not self.alive():
                    self.start()
                try:
                    reply = self.request({"op": "spawn", "uid": uid, "config": config, "files": names}, blobs, fd=child_end.fileno())
                    break
                except ZygoteError:
                    if attempt:
                        raise
        finally:
            child_end.close()
        pidfd = reply.get("pidfd") if isinstance(reply.get("pidfd"), int) and not isinstance(reply.get("pidfd"), bool) else None
        if not reply.get("ok") or not isinstance(reply.get("pid"), int):
            parent_end.close()
            if pidfd is not None:
                os.close(pidfd)
            self.stop()
            raise ZygoteError(str(reply.get("error")))
        worker = ForkedWorker(_ForkedProcess(self, int(reply["pid"]), pidfd), parent_end, sandbox.BUBBLEWRAP)
        # The child waits for its first request before running any student code: move it into a
        # group of its own now, so that the limits count it and everything it starts, and not the zygote.
        host_pid = _host_pid(pidfd)
        group = sandbox.cgroups.SandboxGroup.create("worker", limits.memory_bytes, limits.processes + 4) if host_pid else None
        if group is not None:
            try:
                group.add(host_pid)
            except OSError:
                group.remove()
                group = None
        worker.group, worker.owns_group = group, group is not None
        return worker


def _host_pid(pidfd: int | None) -> int | None:
    """The pid, in the grader's namespace, of the process a pidfd refers to."""
    if pidfd is None:
        return None
    try:
        for line in Path(f"/proc/self/fdinfo/{pidfd}").read_text().splitlines():
            if line.startswith("Pid:"):
                pid = int(line.split()[1])
                return pid if pid > 0 else None
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class _ForkedProcess:
    """``subprocess.Popen``'s poll/wait for a child of the zygote.

    Only the zygote can reap its child and read how it ended; a pidfd (where the
    kernel has them) says *whether* it has ended without a round trip to it.
    """

    zygote: Zygote
    pid: int
    pidfd: int | None = None
    returncode: int | None = None
    how: str | None = None

    def _ended(self, timeout: float = 0.0) -> bool:
        """Whether the child has (or may have) ended, waiting up to ``timeout`` seconds to see."""
        if self.pidfd is None:
            return True
        waiter = select.poll()
        waiter.register(self.pidfd, select.POLLIN)
        return bool(waiter.poll(max(0, int(timeout * 1000))))

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

    def _ask(self, op: str) -> None:
        if self.returncode is not None and op == "status":
            return
        try:
            reply = self.zygote.request({"op": op, "pid": self.pid})
        except ZygoteError:
            reply = {"state": "signal", "value": int(signal.SIGKILL)}
        state = reply.get("state")
        if self.returncode is not None:
            return
        if state == "exit":
            self.returncode, self.how = int(reply["value"]), f"exit {int(reply['value'])}"
        elif state == "signal":
            number = int(reply["value"])
            name = signal.Signals(number).name if number in signal.valid_signals() else str(number)
            self.returncode, self.how = -number, f"signal {name}"

    def poll(self) -> int | None:
        if self.returncode is None and self._ended():
            self._ask("status")
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            if not self._ended(0.01):
                continue
            time.sleep(0.001)  # ended but not yet reaped by the zygote
        return self.returncode

    def kill(self) -> None:
        self._ask("kill")
        self.close()


@dataclass
class ForkedWorker(sandbox.Worker):
    """A worker forked by the zygote: killed and accounted for through the zygote."""

    process: _ForkedProcess

    def kill(self) -> None:
        if self.process.returncode is None:
            self.killed_by_us = True
        # Always: the sweep also ends what the worker left running.
        self.process.kill()
        try:
            self.channel.close()
        except OSError:
            pass
        if self.owns_group and self.group is not None:
            self.group.remove()
            self.owns_group = False

    def how_it_ended(self) -> str:
        if self.killed_by_us:
            return "killed"
        if self.process.poll() is None:
            return "running"
        return self.process.how or "signal SIGKILL"
