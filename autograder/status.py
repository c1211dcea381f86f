"""The explicit outcome every submission ends with."""

from enum import Enum


class Status(str, Enum):
    GRADED = "graded"
    #: The submission changed test cells, read-only cells, nbgrader metadata or the
    #: grading protocol.  Its honest cells are still graded.
    TAMPERED = "tampered"
    MEMORY_LIMIT = "memory limit"
    TIMEOUT = "timeout"
    KERNEL_DIED = "kernel died"
    INVALID_NOTEBOOK = "invalid notebook"
    MISSING = "missing"
    #: The grader itself failed on this submission (a bug of ours, not the student's):
    #: the detail names the error, everyone else is still graded, and a rerun retries it.
    GRADER_ERROR = "grader error"

    def __str__(self) -> str:
        return self.value
