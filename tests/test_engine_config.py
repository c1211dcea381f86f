"""Sandbox limits come from nbgrader_config.py: Execute.timeout per cell, c.Sandbox.<limit> for the rest."""

import pytest

from autograder.course import Course
from autograder.errors import UsageError
from autograder.grade import default_limits
from autograder.sandbox import Limits


def course_with(tmp_path, config: str) -> Course:
    (tmp_path / "source").mkdir()
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\n" + config)
    return Course.open(tmp_path)


def test_limits_follow_the_course_config(tmp_path):
    limits = default_limits(course_with(tmp_path, "c.Execute.timeout = 12\nc.Sandbox.notebook_seconds = 99\nc.Sandbox.memory_bytes = 3 * 2**30\n"))
    assert limits == Limits(cell_seconds=12.0, notebook_seconds=99.0, memory_bytes=3 * 2**30)


@pytest.mark.parametrize("line", ["c.Sandbox.bogus = 1", "c.Sandbox.processes = -4", "c.Sandbox.memory_bytes = 'lots'"])
def test_a_bad_limit_is_a_usage_error(tmp_path, line):
    with pytest.raises(UsageError):
        default_limits(course_with(tmp_path, line + "\n"))
