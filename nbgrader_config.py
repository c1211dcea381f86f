"""nbgrader configuration for the course; the repository root is the course directory."""

c = get_config()  # noqa: F821 - injected by nbgrader

c.CourseDirectory.course_id = "lossfn"

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
