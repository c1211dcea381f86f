#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, grade every assignment's bundled samples with
# --device cuda and with --device cpu, compare every verdict, time a09 on both, and grade one
# class through a GPU runner (a dask scheduler and `autograder runner --gpu` on loopback).
# Finishes within ten minutes on one GPU and 16 cores.
#
# The GPU machines we can reach have Python 3.12 and a CUDA build of torch, but no nbgrader,
# no Jupyter and no network.  So, in two steps:
#
#   1. on a machine with network (same CPU architecture), fetch the wheels once:
#        bench/gpu_check.sh --fetch-wheels bench/gpu_wheels
#      (pip download for Python 3.12 of every pinned dependency except torch)
#   2. on the GPU machine, from the repository root, with the wheels beside this script:
#        bench/gpu_check.sh [--wheels bench/gpu_wheels] [--out DIR]
#      It makes a virtual environment that sees the machine's CUDA torch
#      (--system-site-packages), installs the rest from the wheels without network, and writes
#      its report to DIR (default: $OUT if set, else /tmp/gpu-check) and to stdout.
#
# Exit status 0 when every verdict agrees, 1 when some differ, 2 when it could not run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
WHEELS="$HERE/gpu_wheels"
OUT_DIR="${OUT:-/tmp/gpu-check}"
PYTHON="${PYTHON:-python3}"

requirements() {
    # The pinned dependencies of pyproject.toml, except torch (the GPU machine brings its own CUDA build).
    "$PYTHON" - "$REPO/pyproject.toml" <<'EOF'
import sys, tomllib
pins = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(p for p in pins if not p.startswith("torch")))
EOF
}

case "${1:-}" in
    --fetch-wheels)
        target="${2:?usage: gpu_check.sh --fetch-wheels DIR}"
        mkdir -p "$target"
        requirements > "$target/requirements.txt"
        "$PYTHON" -m pip download --dest "$target" --only-binary=:all: --python-version 3.12 \
            --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
            --implementation cp -r "$target/requirements.txt"
        echo "wheels in $target; copy it beside bench/gpu_check.sh on the GPU machine"
        exit 0
        ;;
esac

while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="$2"; shift 2 ;;
        --out) OUT_DIR="$2"; shift 2 ;;
        *) echo "usage: gpu_check.sh [--wheels DIR] [--out DIR] | --fetch-wheels DIR" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
exec > >(tee "$LOG") 2>&1
started=$(date +%s)

echo "== machine"
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || { echo "no nvidia-smi: not a GPU machine"; exit 2; }
"$PYTHON" --version
nproc

VENV="/tmp/gpu-check-venv"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import nbgrader, distributed, sklearn" 2>/dev/null; then
    echo "== installing the pinned dependencies from $WHEELS (no network)"
    [ -d "$WHEELS" ] || { echo "no wheels at $WHEELS: run gpu_check.sh --fetch-wheels on a machine with network first"; exit 2; }
    requirements > "$OUT_DIR/requirements.txt"
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" -r "$OUT_DIR/requirements.txt"
fi
"$PY" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {torch.cuda.is_available()}, "
      f"device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}")
if torch.__version__.split("+")[0] != "2.13.0":
    print(f"WARNING: torch {torch.__version__} is not the course's pinned 2.13.0: runners here would be refused, "
          "and verdicts may differ for reasons other than the device")
if not torch.cuda.is_available():
    raise SystemExit(2)
EOF
command -v bwrap >/dev/null || echo "NOTE: no bubblewrap here: grading runs in rlimits-only mode (recorded in grades.csv)"

echo "== grading every assignment's samples on cpu and on cuda"
cd "$REPO"
export PYTHONPATH="$REPO"
export PATH="$VENV/bin:$PATH"
set +e
timeout 480 "$PY" - "$OUT_DIR" <<'EOF'
import json, os, sys, time
from pathlib import Path

from autograder.course import Course
from autograder.grade import grade_assignment
from autograder.samples import install_samples

out = Path(sys.argv[1])
workers = max(1, min(8, (os.cpu_count() or 2) // 2))
verdicts, seconds = {}, {}
for device in ("cpu", "cuda"):
    course = Course.open(".").copy_to(out / f"course-{device}")
    for assignment in course.assignments():
        students = [s.student for s in install_samples(course, assignment)]
        if not students:
            continue
        started = time.perf_counter()
        rows, _ = grade_assignment(course, assignment, students, progress=False, workers=workers, device=device)
        seconds[(assignment, device)] = time.perf_counter() - started
        for row in rows:
            verdicts[(assignment, row.student, device)] = (str(row.status), row.score, sorted(row.failures), row.provenance.get("device"))
        print(f"{assignment:24s} {device:4s} {len(rows):3d} samples {seconds[(assignment, device)]:6.1f} s", flush=True)

differ = []
for (assignment, student, device), (status, score, failed, where) in sorted(verdicts.items()):
    if device != "cpu":
        continue
    gpu = verdicts.get((assignment, student, "cuda"))
    if gpu is None or gpu[:3] != (status, score, failed):
        differ.append(f"{assignment}/{student}: cpu {status} {score:g} {failed} | cuda {gpu}")
total = sum(1 for key in verdicts if key[2] == "cpu")
print(f"\n{total} samples graded on both devices; {len(differ)} verdicts differ")
for line in differ:
    print("  DIFFERS", line)
for device in ("cpu", "cuda"):
    a09 = seconds.get(("a09_training_loop", device))
    if a09 is not None:
        print(f"a09_training_loop on {device}: {a09:.1f} s")
(out / "verdicts.json").write_text(json.dumps({"|".join(k): v for k, v in verdicts.items()}, indent=1))
sys.exit(1 if differ else 0)
EOF
verdict_status=$?
set -e

echo "== one class through a GPU runner (dask scheduler and autograder runner --gpu on loopback)"
port=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$VENV/bin/dask" scheduler --host 127.0.0.1 --port "$port" --no-dashboard > "$OUT_DIR/scheduler.log" 2>&1 &
scheduler=$!
sleep 3
"$PY" -m autograder runner --scheduler "tcp://127.0.0.1:$port" --gpu --name gpu-check > "$OUT_DIR/runner.log" 2>&1 &
runner=$!
trap 'kill $runner $scheduler 2>/dev/null || true' EXIT
runner_course="$OUT_DIR/course-runner"
set +e
timeout 150 "$PY" - "$runner_course" "$port" <<'EOF'
import sys, time
from pathlib import Path

from autograder.course import Course
from autograder.grade import grade_assignment
from autograder.runner import RunnerClient, RunnerSettings
from autograder.samples import install_samples

address = f"tcp://127.0.0.1:{sys.argv[2]}"
deadline = time.monotonic() + 90
with RunnerClient(RunnerSettings(address), "auto", check=False) as client:
    while not client.runners(gpu=True) and time.monotonic() < deadline:
        time.sleep(1)
course = Course.open(".").copy_to(Path(sys.argv[1]))
students = [s.student for s in install_samples(course, "a01_encoding")]
rows, path = grade_assignment(course, "a01_encoding", students, progress=False, device="cuda", runners=RunnerSettings(address))
print(f"{len(rows)} a01 samples graded on the GPU runner; provenance of the first: {rows[0].provenance}")
print("statuses:", sorted({str(row.status) for row in rows}))
EOF
runner_status=$?
set -e
kill "$runner" "$scheduler" 2>/dev/null || true

echo "== done in $(( $(date +%s) - started )) s: verdicts exit $verdict_status, GPU runner exit $runner_status; log in $LOG"
if [ "$verdict_status" -ne 0 ] || [ "$runner_status" -ne 0 ]; then exit 1; fi
