"""nbgrader's own autograde doors, routed to the sandboxed engine.

A TA who never types ``autograder`` still grades through nbgrader:
``nbgrader autograde A``, the formgrader's Autograde button and the Python API
(``NbGraderAPI.autograde``), which the button calls.  All three build nbgrader's
``Autograde`` converter, and that converter reads its ``exporter_class`` from
the configuration.  The course's nbgrader_config.py sets::

    c.Autograde.exporter_class = "autograder.nbgrader_door.SandboxedAutogradeExporter"

so every notebook nbgrader would have executed in the student's kernel is
instead graded by ``grade_assignment`` for that one student: the same engine,
the same statuses and the same gradebook rows as ``autograder grade``.
nbgrader keeps what it is good at (finding the submissions, ``--student``,
``--force`` and skipping what is already autograded, the student and submission
rows, exit codes and the API's success/log reply); its preprocessors, its
Execute among them, never run.

Inside the Jupyter server behind the formgrader's button, or any process with
other threads, the engine runs in a fresh Python process of its own: the engine
forks its pool processes, a fork taken while another thread holds a lock can
hang, and the server need not load torch.  Elsewhere (``nbgrader autograde``,
a script) it runs in-process.

A submission the engine cannot grade (``invalid notebook``, ``missing``,
``grader error``) is recorded with its status and then reported to nbgrader as
a failure, so ``nbgrader autograde`` exits 1 and the API answers
``success: false`` with the reason, as nbgrader does for a submission it could
not process.  Tampered, timed-out, memory-limited and dead submissions are
graded (their autograded notebooks exist) and logged as warnings.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import threading
import typing
from dataclasses import dataclass, field
from pathlib import Path

from nbconvert.exporters import NotebookExporter
from nbgrader.converters.base import NbGraderException
from traitlets.config import Config

from .course import Course
from .grade import grade_assignment
from .status import Status

#: Statuses that leave no autograded notebook: nbgrader is told the submission failed.
UNGRADABLE = (Status.INVALID_NOTEBOOK, Status.MISSING, Status.GRADER_ERROR)


@dataclass(frozen=True)
class NbgraderCourse(Course):
    """The course as an nbgrader app sees it: its gradebook URL and its whole configuration
    (nbgrader_config.py plus command-line options such as ``--Execute.timeout``)."""

    settings: Config = field(default_factory=Config, compare=False, repr=False)
    gradebook_url: str = ""

    @property
    def db_url(self) -> str:
        return self.gradebook_url or super().db_url

    def config(self) -> Config:
        config = Config()
        config.merge(self.settings)
        config.CourseDirectory.root = str(self.root)
        return config


@dataclass
class Graded:
    """One submission as the engine left it."""

    status: Status
    detail: str
    score: float
    max_score: float
    #: notebook file name -> the autograded notebook's JSON text.
    notebooks: dict[str, str]


def grade_submission(root: str, db_url: str, config: Config | None, assignment: str, student: str) -> Graded:
    """Grade one student's submission with the engine (``config`` None: the course's
    nbgrader_config.py); what it wrote to autograded/."""
    path = Path(root).resolve()
    plain = Course.open(path)  # the checks `autograder grade` makes (a course directory, the environment on PATH)
    config = plain.config() if config is None else config
    course = NbgraderCourse(path, settings=config, gradebook_url=db_url)
    rows, _ = grade_assignment(course, assignment, [student], progress=False, workers=1)
    row = rows[0]
    folder = course.autograded / student / assignment
    notebooks = {}
    if row.status not in UNGRADABLE:
        notebooks = {path.name: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.ipynb"))}
    return Graded(row.status, row.detail, row.score, row.max_score, notebooks)


def needs_own_process() -> bool:
    """Whether the engine should not run (and fork its pool) in this process: a Jupyter server
    (the formgrader's), which should neither fork its sockets and event loop nor load torch,
    or any process with other threads, where a fork can hang on a lock another thread held."""
    return "jupyter_server.serverapp" in sys.modules or threading.active_count() > 1


def grade_in_own_process(root: str, db_url: str, config: Config, assignment: str, student: str) -> Graded:
    """``grade_submission`` in a fresh Python process (``python -m autograder.nbgrader_door``)."""
    with tempfile.TemporaryDirectory(prefix="autograder-door-") as scratch:
        request, reply = Path(scratch) / "request", Path(scratch) / "reply"
        try:
            settings = pickle.dumps(config)
        except Exception:  # noqa: BLE001 - a config holding functions (hooks): the process reads nbgrader_config.py
            settings = pickle.dumps(None)
        request.write_bytes(pickle.dumps((root, db_url, pickle.loads(settings), assignment, student)))
        done = subprocess.run(
            [sys.executable, "-m", "autograder.nbgrader_door", str(request), str(reply)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
        )
        if done.returncode != 0 or not reply.is_file():
            tail = "\n".join(done.stdout.strip().splitlines()[-5:])
            raise NbGraderException(f"{student}/{assignment}: the grader's process failed (exit {done.returncode}): {tail}")
        return pickle.loads(reply.read_bytes())


class SandboxedAutogradeExporter(NotebookExporter):
    """The exporter nbgrader's ``Autograde`` converter uses to turn a submitted notebook
    into an autograded one: here, by grading the whole submission with the sandboxed
    engine (once, on its first notebook) and handing back the engine's autograded notebook.

    nbgrader calls it twice per notebook (its "sanitize" pass reads submitted/, its
    "autograde" pass reads autograded/); both get the engine's result, and the
    preprocessors nbgrader registers on it are never run.
    """

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        super().__init__(*args, **kwargs)
        self._graded: dict[tuple[str, str], Graded] = {}

    def from_filename(self, filename: str, resources: dict | None = None, **kw: typing.Any):
        converter = self.parent
        coursedir = getattr(converter, "coursedir", None)
        info = (resources or {}).get("nbgrader")
        if coursedir is None or not info:
            raise NbGraderException(
                "SandboxedAutogradeExporter only serves nbgrader's Autograde converter "
                "(c.Autograde.exporter_class), not c.Exporter or another converter"
            )
        assignment, student = info["assignment"], info["student"]
        graded = self._graded.get((assignment, student))
        if graded is None:
            graded = self._grade(converter, coursedir, assignment, student)
        if graded.status in UNGRADABLE:
            raise NbGraderException(f"{student}/{assignment}: {graded.status}: {graded.detail}")
        name = f"{info['notebook']}.ipynb"
        if name not in graded.notebooks:
            raise NbGraderException(f"{student}/{assignment}: the grader produced no autograded {name}")
        resources = dict(resources)
        resources["output_extension"] = ".ipynb"
        return graded.notebooks[name], resources

    def from_notebook_node(self, nb, resources=None, **kw):
        raise NbGraderException("the sandboxed autograder grades submissions from their files, not from notebook objects")

    def _grade(self, converter, coursedir, assignment: str, student: str) -> Graded:
        log = converter.log
        log.info("Grading %s/%s with the sandboxed autograder (not in a Jupyter kernel)", student, assignment)
        grade = grade_submission
        if needs_own_process():
            log.info("In a Jupyter server or beside other threads: the grader runs in a fresh process")
            grade = grade_in_own_process
        graded = grade(str(coursedir.root), coursedir.db_url, converter.config, assignment, student)
        self._graded[(assignment, student)] = graded
        if graded.status == Status.GRADED:
            log.info("%s/%s: graded, %g / %g", student, assignment, graded.score, graded.max_score)
        elif graded.status in UNGRADABLE:
            log.error("%s/%s: %s: %s", student, assignment, graded.status, graded.detail)
        else:
            log.warning("%s/%s: %s, %g / %g: %s", student, assignment, graded.status, graded.score, graded.max_score, graded.detail)
        return graded


def _main(request: str, reply: str) -> None:
    """The fresh process of ``grade_in_own_process``: read the request, grade, write the reply."""
    import warnings

    warnings.filterwarnings("ignore", module="nbgrader")
    warnings.filterwarnings("ignore", message=".*not in session.*")
    graded = grade_submission(*pickle.loads(Path(request).read_bytes()))
    Path(reply).write_bytes(pickle.dumps(graded))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip the interpreter's teardown of torch and the engine, as the autograder command does


if __name__ == "__main__":
    # Through the imported module, so that the reply pickles as autograder.nbgrader_door.Graded, not __main__.Graded.
    from autograder.nbgrader_door import _main as main

    main(*sys.argv[1:3])
