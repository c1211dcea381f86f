"""A grading job: everything needed to grade one submission, as plain data, and the function that grades it.

The TA's machine collects (submissions, the trusted test cells from the
gradebook) and records (the gradebook, autograded/, grades.csv).  Between the
two, grading turns a ``GradingJob`` into a ``JobOutcome`` and touches nothing
else: no course folder, no gradebook.  So the same function runs in the local
pool and on a Dask runner on another machine (see runner.py), and what
travels is exactly what is in a job:

* the trusted material: the gradebook's cells of each notebook (hidden tests
  included) and the sandbox limits;
* the submission's files as bytes (its top-level files, the release's data
  files on top, within the sandbox's file limits) and its notebooks.

Never the gradebook, source/, other students' files or the TA's credentials.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from . import sandbox, verdict
from .collect import Submission, TrustedNotebook, load_notebook, plan_notebook
from .execute import NotebookResult, run_notebook
from .status import Status

#: The torch the course is pinned to (pyproject.toml): "predict the output" answers and
#: verified numbers hold for this one only.  A runner with another torch is refused.
PINNED_TORCH = "2.13.0"


@dataclass(frozen=True)
class GradingJob:
    student: str
    assignment: str
    #: Notebook file name -> the gradebook's cells for it (only notebooks the submission has).
    trusted: dict[str, TrustedNotebook]
    #: File name -> bytes, for every file the job carries (submitted notebooks included).
    blobs: dict[str, bytes]
    #: The files copied into the sandbox's /submission, in order (a subset of ``blobs``).
    scratch_names: tuple[str, ...]
    limits: sandbox.Limits
    device: str = "cpu"
    optimizers: bool = True

    @property
    def key(self) -> str:
        return f"{self.assignment}/{self.student}"

    def budget(self) -> float:
        """The hard wall-clock limit on grading this job, the same as for local grading."""
        return self.limits.submission_seconds(len(self.trusted))

    def size(self) -> int:
        return sum(len(data) for data in self.blobs.values())


@dataclass(frozen=True)
class Provenance:
    """Where and how a submission was graded."""

    runner: str = "local"
    host: str = ""
    device: str = "cpu"
    torch: str = ""
    cuda: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"runner": self.runner, "host": self.host, "device": self.device, "torch": self.torch, "cuda": self.cuda}


@dataclass
class JobOutcome:
    results: list[NotebookResult]
    status: Status
    detail: str
    #: The sandbox mode it ran in (bubblewrap or rlimits only), for grades.csv.
    sandbox: str = ""
    provenance: Provenance = field(default_factory=Provenance)


def build_job(
    submission: Submission,
    trusted: dict[str, TrustedNotebook],
    limits: sandbox.Limits,
    device: str,
    release: Path,
    optimizers: bool = True,
) -> GradingJob:
    """Read one submission into a job, choosing files exactly as the local sandbox always did."""
    blobs: dict[str, bytes] = {}
    scratch: list[str] = []
    total = 0
    for path, name in sandbox.submission_files(submission.folder, release / submission.assignment)[: sandbox.MAX_SUBMISSION_FILES]:
        size = path.stat().st_size
        if total + size > sandbox.MAX_SUBMISSION_BYTES:
            continue
        total += size
        blobs[name] = path.read_bytes()
        scratch.append(name)
    present: dict[str, TrustedNotebook] = {}
    for name, notebook in sorted(trusted.items()):
        path = submission.folder / name
        if not path.is_file():
            continue  # a notebook the gradebook knows but source/ no longer has: recorded as unanswered
        present[name] = notebook
        if name not in blobs:
            blobs[name] = path.read_bytes()
    return GradingJob(submission.student, submission.assignment, present, blobs, tuple(scratch), limits, device, optimizers)


def run_job(job: GradingJob, mode: str) -> JobOutcome:
    """Grade one job in sandbox ``mode``: its notebooks' results and the submission's status.  Writes
    nothing outside its own scratch folder."""
    verdict.roundings_scale = verdict.CUDA_ROUNDINGS_SCALE if job.device == "cuda" else 1.0
    scratch = _scratch_from_bytes(job)
    results: list[NotebookResult] = []
    try:
        for name, notebook in sorted(job.trusted.items()):
            plan = plan_notebook(load_notebook(job.blobs[name]), notebook)
            results.append(run_notebook(name, plan, scratch, job.limits, mode, job.device))
    finally:
        sandbox.remove_tree(scratch)
    status, detail = outcome(results)
    # Provenance is filled in by the caller: asking torch for the GPU's name here would start
    # CUDA in a process forked from the runner, where it cannot start.
    return JobOutcome(results, status, detail, mode)


def _scratch_from_bytes(job: GradingJob) -> Path:
    """What ``sandbox.prepare_scratch`` makes from files on disk, made from the job's bytes."""
    scratch = sandbox.temp_folder("scratch")
    target = scratch / "submission"
    target.mkdir()
    for name in job.scratch_names:
        if "/" in name or name in ("", ".", ".."):
            continue  # file names come from a directory listing; anything else is not ours
        (target / name).write_bytes(job.blobs[name])
    os.chmod(scratch, 0o755)
    os.chmod(target, 0o755)
    for entry in target.iterdir():
        os.chmod(entry, 0o644)
    return scratch


#: When several things went wrong, the status names the one a TA must see first.
_PRIORITY = [Status.TAMPERED, Status.MEMORY_LIMIT, Status.TIMEOUT, Status.KERNEL_DIED]
_EVENT_STATUS = {verdict.PROTOCOL: Status.TAMPERED, verdict.MEMORY: Status.MEMORY_LIMIT, verdict.TIMEOUT: Status.TIMEOUT, verdict.DIED: Status.KERNEL_DIED}


def outcome(results: list[NotebookResult]) -> tuple[Status, str]:
    found: dict[Status, list[str]] = {}
    for result in results:
        prefix = f"{result.name}: " if len(results) > 1 else ""
        for finding in result.plan.findings:
            found.setdefault(Status.TAMPERED, []).append(prefix + finding)
        for event in result.events:
            found.setdefault(_EVENT_STATUS.get(event.kind, Status.KERNEL_DIED), []).append(prefix + event.detail)
    status = next((s for s in _PRIORITY if s in found), Status.GRADED)
    details = [line for s in _PRIORITY for line in dict.fromkeys(found.get(s, []))]
    detail = "; ".join(details)
    return status, detail if len(detail) <= 1500 else detail[:1500] + " ..."


# -- where a job runs ------------------------------------------------------------

#: The runner's name for provenance; "local" on the TA's machine (runner.py sets it).
runner_name = "local"


@lru_cache(maxsize=None)
def _machine() -> tuple[str, str, str, str]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return socket.gethostname(), torch.__version__, torch.version.cuda or "", gpu


def provenance(device: str) -> Provenance:
    host, torch_version, cuda, gpu = _machine()
    return Provenance(runner_name, host, gpu if device == "cuda" and gpu else "cpu", torch_version, cuda)


def torch_problem() -> str | None:
    """Why this machine's torch may not grade the course (None when it is the pinned one)."""
    import torch

    if torch.__version__.split("+")[0] != PINNED_TORCH:
        return f"torch {torch.__version__} is installed, the course is pinned to torch {PINNED_TORCH}"
    return None


@lru_cache(maxsize=None)
def engine_fingerprint() -> str:
    """A short hash of the grading code (this package and course_checks), so the TA can see that a runner's differs."""
    import course_checks

    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.glob("*.py")) + [Path(course_checks.__file__).resolve()]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]

