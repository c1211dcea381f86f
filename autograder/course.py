"""The nbgrader course directory: where sources, releases and submissions live."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from .errors import UsageError

CONFIG_FILE = "nbgrader_config.py"
#: What a course is made of before anyone submits: copy these to get a fresh course.
COURSE_FILES = ("source", "release", "samples", CONFIG_FILE)


@dataclass(frozen=True)
class Course:
    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike[str] = ".") -> "Course":
        path = Path(root).resolve()
        if not path.is_dir():
            raise UsageError(f"course directory not found: {root}")
        if not (path / "source").is_dir():
            raise UsageError(f"not an nbgrader course directory (no source/ folder): {root}")
        _put_environment_on_path()
        return cls(path)

    @property
    def source(self) -> Path:
        return self.root / "source"

    @property
    def release(self) -> Path:
        return self.root / "release"

    @property
    def submitted(self) -> Path:
        return self.root / "submitted"

    @property
    def autograded(self) -> Path:
        return self.root / "autograded"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def db_url(self) -> str:
        configured = self.config().CourseDirectory.get("db_url")
        return configured or f"sqlite:///{self.root / 'gradebook.db'}"

    def assignments(self) -> list[str]:
        return sorted(p.name for p in self.source.iterdir() if p.is_dir() and not p.name.startswith("."))

    def require_assignment(self, name: str) -> str:
        if name not in self.assignments():
            known = ", ".join(self.assignments()) or "none"
            raise UsageError(f"unknown assignment {name!r} (known: {known})")
        return name

    def notebook_names(self, assignment: str) -> list[str]:
        return sorted(p.name for p in (self.source / assignment).glob("*.ipynb"))

    def copy_to(self, destination: Path) -> "Course":
        """A fresh course at ``destination`` with this one's sources, release, samples and config
        (no submissions, no gradebook): for tests and benchmarks."""
        for name in COURSE_FILES:
            source = self.root / name
            if source.is_dir():
                shutil.copytree(source, destination / name)
            elif source.is_file():
                destination.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, destination / name)
        return Course.open(destination)

    def config(self) -> Config:
        config = Config()
        if (self.root / CONFIG_FILE).is_file():
            config = PyFileConfigLoader(CONFIG_FILE, path=str(self.root)).load_config()
        config.CourseDirectory.root = str(self.root)
        return config


def _put_environment_on_path() -> None:
    # nbgrader shells out to `alembic` from the same environment; a venv used
    # without activation doesn't have it on PATH.
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
