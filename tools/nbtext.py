"""Round-trip an nbgrader notebook to a plain-text form that is pleasant to edit.

    python tools/nbtext.py dump source/a01_encoding/encoding.ipynb > /tmp/a01.txt
    python tools/nbtext.py build /tmp/a01.txt source/a01_encoding/encoding.ipynb

The ``.ipynb`` in ``source/`` stays the single source of truth; the text form
is a scratch copy for editing.  Each cell starts with a header line:

    %% markdown
    %% code
    %% setup id=imports                 read-only code cell (locked)
    %% solution id=one_hot              autograded answer (student edits it)
    %% tests id=test_one_hot points=2   autograder tests (locked)
    %% written id=q_why points=2        manually graded markdown answer
    %% task id=plot_check points=1      manually graded task (locked markdown)
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HEADER = "%% "

KINDS = {
    # kind: (cell_type, nbgrader flags)
    "markdown": ("markdown", None),
    "code": ("code", None),
    "setup": ("code", dict(grade=False, solution=False, locked=True, task=False)),
    "solution": ("code", dict(grade=False, solution=True, locked=False, task=False)),
    "tests": ("code", dict(grade=True, solution=False, locked=True, task=False)),
    "written": ("markdown", dict(grade=True, solution=True, locked=False, task=False)),
    "task": ("markdown", dict(grade=False, solution=False, locked=True, task=True)),
}


def _parse_header(line: str) -> tuple[str, dict[str, str]]:
    kind, *pairs = line[len(HEADER):].split()
    if kind not in KINDS:
        raise SystemExit(f"unknown cell kind {kind!r} in header {line!r}")
    return kind, dict(pair.split("=", 1) for pair in pairs)


def build(text: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    chunks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(HEADER):
            chunks.append((line, []))
        elif chunks:
            chunks[-1][1].append(line)
        elif line.strip():
            raise SystemExit("text before the first cell header")
    for index, (header, body) in enumerate(chunks):
        kind, options = _parse_header(header)
        cell_type, flags = KINDS[kind]
        source = "\n".join(body).strip("\n")
        cell = nbformat.v4.new_markdown_cell(source) if cell_type == "markdown" else nbformat.v4.new_code_cell(source)
        cell.id = options.get("id", f"cell-{index:03d}").replace("_", "-")
        if flags is not None:
            if "id" not in options:
                raise SystemExit(f"{header!r} needs id=")
            meta = dict(flags, grade_id=options["id"], schema_version=3)
            if flags["grade"] or flags["task"]:
                meta["points"] = float(options["points"]) if "." in options["points"] else int(options["points"])
            cell.metadata["nbgrader"] = dict(sorted(meta.items()))
            if flags["locked"]:
                cell.metadata["deletable"] = False
                cell.metadata["editable"] = False
        nb.cells.append(cell)
    return nb


def _kind_of(cell: nbformat.NotebookNode) -> str:
    meta = cell.metadata.get("nbgrader")
    if not meta:
        return cell.cell_type
    if meta.get("task"):
        return "task"
    if meta.get("grade") and meta.get("solution"):
        return "written"
    if meta.get("grade"):
        return "tests"
    if meta.get("solution"):
        return "solution"
    return "setup"


def dump(nb: nbformat.NotebookNode) -> str:
    out = []
    for cell in nb.cells:
        kind = _kind_of(cell)
        header = HEADER + kind
        meta = cell.metadata.get("nbgrader")
        if meta:
            header += f" id={meta['grade_id']}"
            if "points" in meta and kind in ("tests", "written", "task"):
                header += f" points={meta['points']}"
        out.append(f"{header}\n{cell.source}\n")
    return "\n".join(out)


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "dump":
        sys.stdout.write(dump(nbformat.read(argv[1], as_version=4)))
        return
    if len(argv) == 3 and argv[0] == "build":
        nb = build(Path(argv[1]).read_text())
        nbformat.validate(nb)
        nbformat.write(nb, argv[2])
        return
    raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
