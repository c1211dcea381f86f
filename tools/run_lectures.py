"""Re-execute the lecture notebooks in notebooks/ in place, so their committed outputs match their code.

    python tools/run_lectures.py                              # every notebooks/*.ipynb
    python tools/run_lectures.py notebooks/04_softmax.ipynb   # just these
    python tools/run_lectures.py --check                      # write nothing; exit 1 if any is stale

Lectures are committed with their outputs so they read well on GitHub. A run is
deterministic: the kernel gets a fixed hash seed and one thread, the notebooks
seed their own random numbers, and everything that changes from run to run
(cell timings, the kernel's Python version) is stripped before writing.
tests/test_lectures.py uses the same functions to prove the committed outputs
are not stale.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parent.parent
LECTURES = REPO / "notebooks"
CELL_TIMEOUT_S = 120

NOTEBOOK_METADATA = {
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}
# Cell metadata keys that Jupyter rewrites on every run or every view.
VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def lecture_paths() -> list[Path]:
    return sorted(LECTURES.glob("*.ipynb"))


def kernel_environment() -> dict[str, str]:
    # One thread keeps float reductions in a fixed order (and is polite on a shared machine);
    # a fixed hash seed keeps set iteration order stable; an inherited MPLBACKEND (Agg in CI)
    # would replace the inline backend and the notebooks would embed no images.
    env = {key: value for key, value in os.environ.items() if key != "MPLBACKEND"}
    return {**env, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def merge_streams(outputs: list) -> list:
    """Join consecutive chunks of the same stream: the kernel splits printed text at
    arbitrary points that vary with machine load."""
    merged: list = []
    for output in outputs:
        previous = merged[-1] if merged else None
        if (
            output.get("output_type") == "stream"
            and previous is not None
            and previous.get("output_type") == "stream"
            and previous.get("name") == output.get("name")
        ):
            previous["text"] = previous["text"] + output["text"]
        else:
            merged.append(output)
    return merged


def normalize(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop everything that differs between two runs of the same code."""
    notebook.metadata = nbformat.from_dict(NOTEBOOK_METADATA)
    for cell in notebook.cells:
        for key in VOLATILE_CELL_METADATA:
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = merge_streams(cell.outputs)
        for output in cell.get("outputs", []):
            output.pop("transient", None)
    return notebook


def execute(path: Path) -> tuple[nbformat.NotebookNode, float]:
    """Run a copy of the notebook at ``path`` top to bottom; return it normalized, and the seconds taken."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    client.execute(env=kernel_environment())
    return normalize(notebook), time.perf_counter() - started


def output_signature(notebook: nbformat.NotebookNode) -> list[tuple]:
    """What must not change between the committed notebook and a fresh run: per code cell,
    its execution count, every stream and text/plain output, and where the images are."""
    signature = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        outputs = []
        for output in merge_streams([dict(o) for o in cell.get("outputs", [])]):
            output = nbformat.from_dict(output)
            if output.output_type == "stream":
                outputs.append(("stream", output.name, output.text))
            elif output.output_type in ("execute_result", "display_data"):
                data = output.get("data", {})
                outputs.append((output.output_type, data.get("text/plain"), "image/png" in data))
            else:
                outputs.append((output.output_type, output.get("ename"), output.get("evalue")))
        signature.append((index, cell.get("execution_count"), outputs))
    return signature


def first_difference(committed: nbformat.NotebookNode, fresh: nbformat.NotebookNode) -> str | None:
    """Describe the first code cell whose committed outputs differ from a fresh run, or None."""
    old, new = output_signature(committed), output_signature(fresh)
    for (index, old_count, old_outputs), (_, new_count, new_outputs) in zip(old, new):
        if (old_count, old_outputs) != (new_count, new_outputs):
            source = committed.cells[index].source.splitlines()
            return (
                f"cell {index} ({source[0] if source else 'empty'!s:.60}):\n"
                f"  committed: count={old_count} {old_outputs!r:.600}\n"
                f"  fresh:     count={new_count} {new_outputs!r:.600}"
            )
    if len(old) != len(new):
        return f"{len(old)} code cells committed, {len(new)} after a fresh run"
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks to run (default: every notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="write nothing; fail if committed outputs are stale")
    args = parser.parse_args(argv)
    stale = failed = 0
    for path in args.paths or lecture_paths():
        try:
            fresh, seconds = execute(path)
        except CellExecutionError as error:
            failed += 1
            print(f"FAILED {path}: a cell raised; nothing written\n{error}")
            continue
        if args.check:
            difference = first_difference(nbformat.read(path, as_version=4), fresh)
            if difference:
                stale += 1
                print(f"STALE {path} ({seconds:.1f} s)\n{difference}")
            else:
                print(f"ok    {path} ({seconds:.1f} s)")
        else:
            nbformat.validate(fresh)
            nbformat.write(fresh, path)
            print(f"ran   {path} ({seconds:.1f} s)")
    if stale:
        print(f"{stale} stale notebook(s): regenerate with python tools/run_lectures.py")
    return 1 if stale or failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
