#!/usr/bin/env bash
# Regenerate release/<assignment> from source/ in a scratch course, so the
# repository's own gradebook.db is never touched.  Usage: tools/regen_release.sh a01_encoding [...]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# -L: source/<assignment>/course_checks.py is a link to the one shared module
cp -rL "$repo/source" "$repo/nbgrader_config.py" "$scratch/"
for assignment in "$@"; do
  PATH="$repo/.venv/bin:$PATH" "$repo/.venv/bin/autograder" release "$assignment" --course "$scratch"
  rm -rf "$repo/release/$assignment"
  cp -r "$scratch/release/$assignment" "$repo/release/$assignment"
done
