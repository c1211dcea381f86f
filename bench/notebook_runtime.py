"""How long each instructor notebook takes to run, against a baseline run beside it.

    python bench/notebook_runtime.py [--repeat 3] [a02_cross_entropy ...]

The baseline is the assignment's own setup cell alone (kernel start and the
imports every notebook pays), run in the same way just before; the ratio says
how much the notebook's own work costs on top of that, whatever the machine's
speed or load.  Each figure is the least of ``--repeat`` runs.  Solution
notebooks are meant to run in seconds: a notebook whose own work exceeds
``--budget`` seconds is marked, and the exit status is 1 if any is.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parent.parent


def run_seconds(notebook: nbformat.NotebookNode, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        copy = nbformat.from_dict(notebook)
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            NotebookClient(copy, timeout=600, kernel_name="python3", resources={"metadata": {"path": folder}}).execute()
            best = min(best, time.perf_counter() - started)
    return best


def setup_only(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    baseline = nbformat.from_dict(notebook)
    baseline.cells = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "setup"][:1]
    return baseline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assignments", nargs="*", help="default: every assignment in source/")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of a notebook's own work (default 30)")
    args = parser.parse_args(argv)
    names = args.assignments or sorted(p.name for p in (REPO / "source").iterdir() if p.is_dir())
    over = False
    print(f"{'notebook':<44} {'baseline s':>10} {'notebook s':>10} {'own work s':>10} {'ratio':>7}")
    for name in names:
        folder = REPO / "source" / name
        if not folder.is_dir():
            print(f"error: no assignment {name!r} in source/", file=sys.stderr)
            return 2
        for path in sorted(folder.glob("*.ipynb")):
            notebook = nbformat.read(path, as_version=4)
            baseline = run_seconds(setup_only(notebook), args.repeat)
            total = run_seconds(notebook, args.repeat)
            own = total - baseline
            flag = "  over budget" if own > args.budget else ""
            over |= bool(flag)
            print(f"{name + '/' + path.name:<44} {baseline:>10.2f} {total:>10.2f} {own:>10.2f} {total / baseline:>6.1f}x{flag}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
