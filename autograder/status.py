"""The explicit outcome every submission ends with."""

from enum import Enum


class Status(str, Enum):
    GRADED = "graded"
    TIMEOUT = "timeout"
    KERNEL_DIED = "kernel died"
    INVALID_NOTEBOOK = "invalid notebook"
    MISSING = "missing"

    def __str__(self) -> str:
        return self.value
