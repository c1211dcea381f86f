"""Run one submitted notebook: student cells in the sandbox, test cells in the grader.

Cells run in the submission's order.  Student code (solution cells, the
student's own cells and restored read-only cells) goes to the sandboxed
worker; each test cell, from the gradebook, runs here when its turn comes
(``verdict.run_test``), so it sees the student's state at that point, as it
would in nbgrader.

Limits: each cell has ``cell_seconds`` of wall-clock time and the notebook's
student code ``notebook_seconds`` in all.  A cell or call that runs over, or a
worker that dies, costs only what depends on it: the worker is killed (with
everything it started), a fresh one replays the cells that ran before (minus
the one that broke it) and grading goes on, up to ``restarts`` times.
"""

from __future__ import annotations

import base64
import contextlib
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import nbformat

from . import sandbox, wire
from .collect import Plan, PlannedCell
from .verdict import DIED, GAVE_UP, MEMORY, PROTOCOL, TIMEOUT, Interrupted, Verdict, is_memory_error, run_test, visible_source


@dataclass
class Event:
    """Something that went wrong in the sandbox: a timeout, a death, a limit, a protocol breach."""

    kind: str
    detail: str


@dataclass
class CellRecord:
    """What a student cell printed and raised, for the autograded notebook."""

    outputs: list[dict] = field(default_factory=list)


@dataclass
class NotebookResult:
    name: str
    plan: Plan
    verdicts: dict[str, Verdict]
    records: dict[int, CellRecord]
    events: list[Event]
    #: Wall-clock seconds the notebook took to grade (sandbox start, student cells, tests).
    seconds: float = 0.0


class KernelSession:
    """The student's process for one notebook, restarted and replayed when it breaks."""

    def __init__(self, scratch: Path, limits: sandbox.Limits, mode: str, device: str = "cpu") -> None:
        self.scratch = scratch
        self.limits = limits
        self.mode = mode
        self.device = device
        self.worker: sandbox.Worker | None = None
        self.events: list[Event] = []
        self.history: list[tuple[int, str]] = []
        self.poisoned: set[int] = set()
        self.starts = 0
        self.student_seconds = 0.0
        self.gave_up: str | None = None
        self._current_cell: int | None = None
        self._seq = 0
        self.output_bytes = 0

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        if self.worker is not None:
            if self.worker.alive() and self.worker.hit_memory_limit():
                # A child of the worker was killed for the sandbox's memory limit while the worker went on.
                self.events.append(Event(MEMORY, "a process of the notebook was killed for using more than the memory limit "
                                                 f"({self.limits.memory_bytes // 2**20} MiB across all its processes)"))
            self.worker.kill()
            self.worker = None

    def _notebook_left(self) -> float:
        return self.limits.notebook_seconds - self.student_seconds

    def _ensure(self) -> sandbox.Worker:
        while True:
            if self.gave_up:
                raise Interrupted(GAVE_UP, self.gave_up)
            if self.worker is not None and self.worker.alive():
                return self.worker
            if self.worker is not None:
                self._record_end(self.worker)
                self.worker.kill()
                self.worker = None
            if self._notebook_left() <= 0:
                self.gave_up = f"the notebook used up its {self.limits.notebook_seconds:g} s of running time"
                self.events.append(Event(TIMEOUT, self.gave_up))
                continue
            if self.starts > self.limits.restarts:
                self.gave_up = "the notebook's process kept failing, so the remaining tests were not run"
                continue
            self.starts += 1
            try:
                self.worker = sandbox.start_worker(self.scratch, self.limits, self.mode, self.device)
            except sandbox.SandboxError as err:
                self.gave_up = f"the sandbox could not start: {err}"
                self.events.append(Event(DIED, self.gave_up))
                continue
            if not self._replay():
                continue

    def _replay(self) -> bool:
        """Re-run the cells that ran before; False if that broke the new worker too."""
        for index, source in self.history:
            if index in self.poisoned:
                continue
            try:
                self._send_cell(index, source)
            except Interrupted:
                self.poisoned.add(index)
                return False
        return True

    def _record_end(self, worker: sandbox.Worker) -> None:
        ended = worker.how_it_ended()
        where = f" in cell {self._current_cell + 1}" if self._current_cell is not None else ""
        if worker.hit_memory_limit():
            # Whoever ended the worker (the kernel, or a timeout while it was being starved), the limit was hit.
            self.events.append(Event(MEMORY, f"the notebook's processes together used more than the memory limit "
                                             f"({self.limits.memory_bytes // 2**20} MiB, memfd, shared memory and tmpfs "
                                             f"files included){where}"))
            worker.oom_kills_at_start = worker.group.oom_kills()
            return
        if ended in ("killed", "running"):
            return
        if ended == "signal SIGXCPU":
            self.events.append(Event(TIMEOUT, f"the notebook's process ran out of CPU time{where}"))
        elif ended == "signal SIGXFSZ":
            self.events.append(Event(MEMORY, f"the notebook's process wrote a file larger than the limit{where}"))
        else:
            self.events.append(Event(DIED, f"the notebook's process died ({ended}){where}"))

    # -- requests -------------------------------------------------------------

    def request(self, header: dict, blobs: list[bytes], seconds: float) -> tuple[dict, list[bytes]]:
        """Send one request and wait for its reply within ``seconds`` (and the notebook's budget)."""
        worker = self._ensure()
        budget = min(seconds, self.limits.cell_seconds, self._notebook_left())
        self._seq += 1
        header = dict(header, seq=self._seq)
        started = time.monotonic()
        try:
            wire.send(worker.channel, header, blobs, started + max(budget, 0.0))
            reply, reply_blobs = wire.recv(worker.channel, started + max(budget, 0.0), max_frame=self.limits.frame_bytes)
        except TimeoutError:
            if worker.hit_memory_limit():
                # Starved at its memory limit (the kernel evicting its libraries) rather than slow.
                self._record_end(worker)
                worker.kill()
                raise Interrupted(MEMORY, f"{_describe(header)} ran into the memory limit") from None
            worker.kill()
            what = "the notebook's time budget ran out" if budget >= self._notebook_left() - 0.01 else f"no answer within {budget:.3g} s"
            self.events.append(Event(TIMEOUT, f"{what} ({_describe(header)})"))
            raise Interrupted(TIMEOUT, f"{_describe(header)} did not finish in time: {what}") from None
        except wire.FrameTooLarge as err:
            worker.kill()
            self.events.append(Event(MEMORY, f"{_describe(header)} sent back too much data: {err}"))
            raise Interrupted(MEMORY, f"{_describe(header)} sent back more data than the grader accepts") from None
        except wire.WireError as err:
            worker.kill()
            self.events.append(Event(PROTOCOL, f"the notebook's process broke the grading protocol: {err}"))
            raise Interrupted(PROTOCOL, "the notebook's process broke the grading protocol") from None
        except (EOFError, OSError):
            try:
                worker.process.wait(timeout=30)
            except Exception:  # noqa: BLE001 - it is killed below either way
                pass
            self._record_end(worker)
            worker.kill()
            self.worker = None
            raise Interrupted(DIED, f"the notebook's process died during {_describe(header)}") from None
        except BaseException as err:
            # An alarm or ^C in the middle of a reply leaves the channel unusable.
            worker.kill()
            if isinstance(err, Interrupted) and err.kind == TIMEOUT:
                self.events.append(Event(TIMEOUT, f"{_describe(header)}: {err}"))
            raise
        finally:
            self.student_seconds += time.monotonic() - started
        if not isinstance(reply, dict) or reply.get("seq") != self._seq:
            # A reply the grader did not ask for: the student's code wrote to the channel itself.
            worker.kill()
            self.events.append(Event(PROTOCOL, "the notebook's process broke the grading protocol"))
            raise Interrupted(PROTOCOL, "the notebook's process broke the grading protocol")
        error = reply.get("error")
        if isinstance(error, dict) and is_memory_error(error):
            self.events.append(Event(MEMORY, f"{_describe(header)} ran out of memory: {wire.checked_error(error)['message'][:200]}"))
        return reply, reply_blobs

    @contextlib.contextmanager
    def isolated(self) -> Iterator[None]:
        """Run the block against a forked copy of the worker that ends with it.

        Nothing the block's calls leave in the student's process (a hidden test's
        inputs kept in a global, say) reaches the cells that run after it.  On a GPU
        the worker is not forked (CUDA does not survive a fork): the block runs as is.
        """
        forked = False
        if self.device != "cuda":
            try:
                reply, _ = self.request({"op": "fork"}, [], self.limits.cell_seconds)
                forked = bool(reply.get("ok")) and reply.get("copy") is True
            except Interrupted:
                forked = False  # the block meets the same trouble and reports it
        try:
            yield
        finally:
            if forked and self.worker is not None and self.worker.alive():
                try:
                    self.request({"op": "unfork"}, [], self.limits.cell_seconds)
                except Interrupted:
                    pass  # the worker is gone; the next cell starts a new one

    def release_graphs(self) -> None:
        if self.worker is not None and self.worker.alive():
            try:
                self.request({"op": "release"}, [], self.limits.cell_seconds)
            except Interrupted:
                pass

    def _send_cell(self, index: int, source: str) -> tuple[dict, list[bytes]]:
        self._current_cell = index
        try:
            return self.request({"op": "run", "index": index, "source": source}, [], self.limits.cell_seconds)
        finally:
            self._current_cell = None

    def run_cell(self, index: int, source: str) -> CellRecord:
        """Execute one student cell; its output (or why it has none) for the autograded notebook."""
        try:
            reply, blobs = self._send_cell(index, source)
        except Interrupted as err:
            self.poisoned.add(index)
            return CellRecord([_error_output("CellNotFinished", str(err))])
        self.history.append((index, source))
        return CellRecord(self._within_output_budget(_outputs(reply, blobs)))

    def _within_output_budget(self, outputs: list[dict]) -> list[dict]:
        """The cell's outputs, or a notice once the notebook's outputs together pass their limit."""
        size = sum(len(str(output.get("text", ""))) + sum(len(str(v)) for v in output.get("data", {}).values())
                   + len(str(output.get("evalue", ""))) + sum(len(line) for line in output.get("traceback", []))
                   for output in outputs)
        if self.output_bytes + size <= self.limits.notebook_output_bytes:
            self.output_bytes += size
            return outputs
        self.output_bytes = self.limits.notebook_output_bytes
        notice = (f"[output dropped by the grader: this notebook's outputs together passed "
                  f"{self.limits.notebook_output_bytes // 2**20} MiB]\n")
        return [_output("stream", name="stdout", text=notice)]


def _describe(header: dict) -> str:
    op = header.get("op")
    if op == "run":
        index = header.get("index")
        return f"cell {index + 1}" if isinstance(index, int) else "a cell"
    if op == "call":
        return f"the call to {header.get('name')}"
    return {"lookup": "looking up the notebook's names", "backward": "the backward pass"}.get(str(op), str(op))


def _text(value: object, limit: int = 100_000) -> str:
    """Student text for the notebook: safe to write, and cut with a notice that says so."""
    text = wire.safe_text(value, 16 * limit)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[... {len(text) - limit} more characters dropped by the grader]\n"


def _outputs(reply: dict, blobs: list[bytes]) -> list[dict]:
    outputs = []
    for stream in ("stdout", "stderr"):
        text = _text(reply.get(stream))
        if text:
            outputs.append(_output("stream", name=stream, text=text))
    if reply.get("result"):
        outputs.append(_output("execute_result", data={"text/plain": _text(reply["result"])}, metadata={}, execution_count=None))
    count = reply.get("images")
    if isinstance(count, int):
        for data in blobs[: min(count, 8)]:
            if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) <= 2 * 2**20:
                outputs.append(_output("display_data", data={"image/png": base64.b64encode(data).decode()}, metadata={}))
    error = reply.get("error")
    if isinstance(error, dict):
        error = wire.checked_error(error)
        outputs.append(_error_output(error["mro"][0][1][:100], error["message"], error["traceback"]))
    return outputs


def _output(output_type: str, **fields: object) -> nbformat.NotebookNode:
    # Built without nbformat's per-node validation, which cost more than the rest of
    # recording; record.py validates the whole notebook once when it writes it.
    return nbformat.from_dict({"output_type": output_type, **fields})


def _error_output(ename: str, evalue: str, traceback_text: str = "") -> dict:
    lines = traceback_text.splitlines() if traceback_text else [f"{ename}: {evalue}"]
    return _output("error", ename=ename, evalue=evalue, traceback=lines)


def _clock() -> float:
    """The wall clock of a notebook's grading budget (a function, so tests can move it)."""
    return time.monotonic()


def run_notebook(name: str, plan: Plan, scratch: Path, limits: sandbox.Limits, mode: str, device: str = "cpu") -> NotebookResult:
    """Grade one notebook following its plan; the sandbox is gone when this returns."""
    session = KernelSession(scratch, limits, mode, device)
    verdicts: dict[str, Verdict] = {}
    records: dict[int, CellRecord] = {}
    deadline = _clock() + limits.grading_seconds
    started = time.monotonic()
    try:
        for index, step in enumerate(plan.steps):
            if _clock() > deadline and not session.gave_up and step.action in ("run", "test"):
                # The grader's own time counts too: values that are slow to check cannot stretch a submission.
                session.gave_up = f"the notebook used up its {limits.grading_seconds:g} s of grading time"
                session.events.append(Event(TIMEOUT, session.gave_up))
            if step.action == "run":
                records[index] = session.run_cell(index, step.source)
            elif step.action == "test" and step.trusted is not None:
                with session.isolated():
                    verdicts[step.trusted.grade_id] = run_test(
                        session, step.trusted.grade_id, step.source, step.trusted.points, limits.cell_seconds
                    )
    finally:
        session.close()
    return NotebookResult(name, plan, verdicts, records, session.events, time.monotonic() - started)


def autograded_notebook(result: NotebookResult) -> nbformat.NotebookNode:
    """The notebook a TA grades by hand and a student gets as feedback.

    Test cells show only their visible source and a pass/fail line with the
    diagnostic message; hidden source, tracebacks and expected values stay out.
    """
    notebook = nbformat.v4.new_notebook()
    if result.plan.notebook.kernelspec:
        notebook.metadata["kernelspec"] = result.plan.notebook.kernelspec
    notebook.metadata["language_info"] = {"name": "python"}
    # How long grading took, for the class report's slowest submissions and LMS exports.
    notebook.metadata["autograder"] = {"seconds": round(result.seconds, 3)}
    for index, step in enumerate(result.plan.steps):
        cell = _new_cell(step)
        if step.trusted is not None:
            cell.metadata["nbgrader"] = step.trusted.nbgrader_metadata()
        if step.action == "run" and cell.cell_type == "code":
            cell.outputs = result.records.get(index, CellRecord()).outputs
        if step.action == "test" and step.trusted is not None:
            cell.source = visible_source(step.source).rstrip()
            cell.outputs = [_verdict_output(result.verdicts.get(step.trusted.grade_id))]
        notebook.cells.append(cell)
    for position, cell in enumerate(notebook.cells):
        cell.id = f"cell-{position:04d}"
    return notebook


def _new_cell(step: PlannedCell) -> nbformat.NotebookNode:
    # Unvalidated, like _output; ids are assigned once the notebook is complete.
    cell_type = step.cell_type if step.cell_type in ("markdown", "raw") else "code"
    fields: dict = {"cell_type": cell_type, "metadata": {}, "source": step.source}
    if cell_type == "code":
        fields.update(outputs=[], execution_count=None)
    return nbformat.from_dict(fields)


def _verdict_output(verdict: Verdict | None) -> dict:
    if verdict is None:
        return _error_output("NotGraded", "this test was not run")
    if verdict.passed:
        return _output("stream", name="stdout", text=f"passed ({verdict.points:g} point(s))\n")
    where = "a hidden test" if verdict.hidden else "a visible test"
    message = verdict.public_message.strip() or "(no message)"
    # The formgrader and the feedback show the traceback in a <pre>: wrap it so
    # that a long message does not run off the right edge.
    lines = textwrap.wrap(f"failed ({where}): {verdict.ename}: {message}", width=100, subsequent_indent="    ",
                          break_long_words=False, break_on_hyphens=False)
    return _error_output(verdict.ename, message, "\n".join(lines))
