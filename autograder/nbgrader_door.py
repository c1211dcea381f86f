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

A submission the engine cannot grade (``invalid notebook``, ``missing``,
``grader error``) is recorded with its status and then reported to nbgrader as
a failure, so ``nbgrader autograde`` exits 1 and the API answers
``success: false`` with the reason, as nbgrader does for a submission it could
not process.  Tampered, timed-out, memory-limited and dead submissions are
graded (their autograded notebooks exist) and logged as warnings.
"""

from __future__ import annotations

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


def grade_submission(coursedir, config: Config, assignment: str, student: str) -> Graded:
    """Grade one student's submission with the engine; what it wrote to autograded/."""
    root = Path(coursedir.root).resolve()
    Course.open(root)  # the checks `autograder grade` makes (a course directory, the environment on PATH)
    course = NbgraderCourse(root, settings=config, gradebook_url=coursedir.db_url)
    rows, _ = grade_assignment(course, assignment, [student], progress=False, workers=1)
    row = rows[0]
    folder = course.autograded / student / assignment
    notebooks = {}
    if row.status not in UNGRADABLE:
        notebooks = {path.name: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.ipynb"))}
    return Graded(row.status, row.detail, row.score, row.max_score, notebooks)


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
        graded = grade_submission(coursedir, converter.config, assignment, student)
        self._graded[(assignment, student)] = graded
        if graded.status == Status.GRADED:
            log.info("%s/%s: graded, %g / %g", student, assignment, graded.score, graded.max_score)
        elif graded.status in UNGRADABLE:
            log.error("%s/%s: %s: %s", student, assignment, graded.status, graded.detail)
        else:
            log.warning("%s/%s: %s, %g / %g: %s", student, assignment, graded.status, graded.score, graded.max_score, graded.detail)
        return graded
