"""nbgrader configuration for the course; the repository root is the course directory."""

c = get_config()  # noqa: F821 - injected by nbgrader

c.CourseDirectory.course_id = "lossfn"

# The exchange (where Release, Fetch, Submit and Feedback meet) is course-local, so a
# single-machine course works out of the box: the student's Assignment List shows "no
# assignments" before any release instead of "Error fetching courses" (nbgrader's default,
# /srv/nbgrader/exchange, is missing or unwritable on most machines).  On JupyterHub,
# where students and TAs are different users, delete these lines and set one shared
# exchange for everyone instead (README, "The exchange").
import os  # noqa: E402

_course_exchange = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exchange")
try:
    os.makedirs(_course_exchange, exist_ok=True)
except OSError:
    pass  # a read-only clone: nbgrader then names the unwritable folder itself
c.Exchange.root = _course_exchange

# Test cells read their helpers from course_checks, installed with the course
# environment, so release folders carry notebooks only.
c.CourseDirectory.ignore = [".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback"]

# A torch UserWarning in a correct answer must not zero the cell (nbgrader scores
# any stderr output as 0), but a real error still does.
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = r"(?s).*Warning.*"

# Deleted or stripped test cells are put back and run instead of being left
# ungraded.
c.OverwriteCells.add_missing_cells = True

c.Execute.timeout = 30
# Keep the kernel's start-up chatter out of the TA's terminal.
c.Execute.extra_arguments = ["--IPKernelApp.log_level=ERROR"]

# Feedback shows which checks passed and their messages, not the hidden tests.
c.GenerateFeedback.preprocessors = [
    "nbgrader.preprocessors.GetGrades",
    "nbgrader.preprocessors.ClearHiddenTests",
    "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
]

# Every nbgrader door that autogrades (`nbgrader autograde`, the formgrader's
# Autograde button, NbGraderAPI.autograde) grades with the sandboxed engine of
# `autograder grade`, never in the student's own kernel: nbgrader's Autograde
# converter hands each submission to this exporter (autograder/nbgrader_door.py).
c.Autograde.exporter_class = "autograder.nbgrader_door.SandboxedAutogradeExporter"

# `nbgrader export` adds each submission's status (graded, tampered, timeout, ...)
# and the count of answers still awaiting manual grading (autograder/nbgrader_export.py).
c.ExportApp.plugin_class = "autograder.nbgrader_export.StatusCsvExportPlugin"
