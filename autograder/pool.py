"""Processes that grade submissions, each with a warm sandbox, under a hard wall-clock budget.

The grader does real work on the values a student's code sends back (decoding
them, comparing them with references).  Python-level alarms cannot interrupt C
code, so a submission's budget is enforced from outside: every submission is
graded in a pool process, the parent knows which process grades which
submission and since when, and a process that outruns its submission's budget
is killed (its sandboxes end with it, see ``sandbox.die_with_parent``) and
replaced.  The other submissions in flight are not touched.

The pool knows nothing about grading: it runs ``task(*job)`` in a process and
hands back what it returned, or an :class:`Outcome` that says why it could not.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Hashable, Iterable, Iterator

#: How an outcome ended.
DONE, FAILED, OVERRAN, DIED = "done", "failed", "overran", "died"
#: A pool process says so once its initializer has run (a job's budget starts then, not before).
_READY = "ready"


@dataclass(frozen=True)
class Outcome:
    kind: str
    #: ``task``'s return value when ``kind`` is DONE.
    value: Any = None
    #: What went wrong, in one line a TA can read, otherwise.
    detail: str = ""


@dataclass
class _Process:
    process: multiprocessing.process.BaseProcess
    connection: Connection
    born: float
    ready: bool = False
    key: Hashable | None = None
    started: float = 0.0
    budget: float = 0.0

    def deadline(self, startup_seconds: float) -> float:
        if not self.ready:
            return max(self.born + startup_seconds, self.started) + self.budget
        return self.started + self.budget


class GradingPool:
    """``size`` processes forked from this one; each runs ``initializer(*initargs)`` once, then jobs.

    Jobs are ``(key, args, budget_seconds)``; :meth:`run` yields ``(key, Outcome)``
    as jobs finish, in the order they finish.
    """

    def __init__(self, size: int, task: Callable[..., Any], initializer: Callable[..., None] | None = None,
                 initargs: tuple = (), startup_seconds: float = 300.0) -> None:
        if size < 1:
            raise ValueError("a pool needs at least one process")
        self.size = size
        self._task = task
        self._initializer = initializer
        self._initargs = initargs
        #: How long a new process may take to start (its sandbox warm-up) before its first job's budget runs.
        self.startup_seconds = startup_seconds
        # fork: the processes start with the grader's imports (torch, the engine) already loaded.
        self._context = multiprocessing.get_context("fork")
        self._processes: list[_Process] = []
        #: Called after a process was killed or died, once it is reaped (cleanup of what it left).
        self.after_loss: Callable[[], None] = lambda: None

    def __enter__(self) -> "GradingPool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, jobs: Iterable[tuple[Hashable, tuple, float]]) -> Iterator[tuple[Hashable, Outcome]]:
        queue = deque(jobs)
        while queue or any(p.key is not None for p in self._processes):
            while queue and (idle := self._idle_process()) is not None:
                key, args, budget = queue.popleft()
                self._start_job(idle, key, args, budget)
            yield from self._collect()

    def close(self) -> None:
        """End every pool process (their sandboxes end with them)."""
        for entry in self._processes:
            try:
                entry.connection.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + 5.0
        for entry in self._processes:
            entry.process.join(max(0.0, deadline - time.monotonic()))
            if entry.process.is_alive():
                entry.process.kill()
                entry.process.join()
            entry.connection.close()
        lost = any(entry.process.exitcode != 0 for entry in self._processes)
        self._processes.clear()
        if lost:
            self.after_loss()

    # -- the parent's side --------------------------------------------------------------

    def _idle_process(self) -> _Process | None:
        for entry in self._processes:
            if entry.key is None:
                return entry
        if len(self._processes) < self.size:
            entry = self._spawn()
            self._processes.append(entry)
            return entry
        return None

    def _spawn(self) -> _Process:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_serve, args=(child_end, self._task, self._initializer, self._initargs),
                                        daemon=True, name="autograder-pool")
        process.start()
        child_end.close()
        return _Process(process, parent_end, born=time.monotonic())

    def _start_job(self, entry: _Process, key: Hashable, args: tuple, budget: float) -> None:
        entry.key, entry.started, entry.budget = key, time.monotonic(), budget
        try:
            entry.connection.send(args)
        except OSError:
            pass  # the process is gone: _collect sees its end and reports it

    def _collect(self) -> Iterator[tuple[Hashable, Outcome]]:
        busy = [entry for entry in self._processes if entry.key is not None]
        now = time.monotonic()
        timeout = max(0.0, min(entry.deadline(self.startup_seconds) - now for entry in busy))
        ready = wait([entry.connection for entry in busy] + [entry.process.sentinel for entry in busy], timeout)
        for entry in busy:
            key = entry.key
            if entry.connection in ready:
                try:
                    kind, value = entry.connection.recv()
                except (EOFError, OSError):
                    yield key, self._lose(entry, DIED, self._death(entry))
                    continue
                if kind == _READY:
                    entry.ready, entry.started = True, time.monotonic()
                    continue
                entry.key = None
                yield key, Outcome(DONE, value) if kind == DONE else Outcome(FAILED, detail=value)
            elif entry.process.sentinel in ready:
                yield key, self._lose(entry, DIED, self._death(entry))
            elif time.monotonic() > entry.deadline(self.startup_seconds):
                yield key, self._lose(entry, OVERRAN, f"grading it ran past its {entry.budget:g} s budget and was stopped")

    def _death(self, entry: _Process) -> str:
        entry.process.join(1.0)
        code = entry.process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the grading process was killed by {name} (out of memory?)" if name == "SIGKILL" else f"the grading process was killed by {name}"
        return f"the grading process ended unexpectedly (exit code {code})"

    def _lose(self, entry: _Process, kind: str, detail: str) -> Outcome:
        """Kill ``entry``'s process, forget it (a new one is forked when needed) and clean up after it."""
        if entry.process.is_alive():
            entry.process.kill()
        entry.process.join()
        entry.connection.close()
        self._processes.remove(entry)
        self.after_loss()
        return Outcome(kind, detail=detail)


# -- the pool process's side ---------------------------------------------------------------


def _serve(connection: Connection, task: Callable[..., Any], initializer: Callable[..., None] | None, initargs: tuple) -> None:
    # Ctrl-C reaches the whole foreground process group; the parent decides what ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)
    connection.send((_READY, None))
    while True:
        try:
            args = connection.recv()
        except (EOFError, OSError):
            break
        if args is None:
            break
        try:
            reply = (DONE, task(*args))
        except Exception as err:  # noqa: BLE001 - reported to the parent, which names the submission
            reply = (FAILED, f"{type(err).__name__}: {err}")
            if os.environ.get("AUTOGRADER_DEBUG"):
                traceback.print_exc()
        try:
            connection.send(reply)
        except Exception as err:  # noqa: BLE001 - e.g. a result that cannot be pickled
            connection.send((FAILED, f"{type(err).__name__}: {err}"))
    # Pool processes run no atexit handlers: end the sandboxes here.
    from . import sandbox

    sandbox.stop_zygotes()
    os._exit(0)
