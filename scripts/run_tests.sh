#!/usr/bin/env bash
# Runs the test suite the way CI does: headless Qt, the project's virtual environment, and a hard
# failure when pytest collects nothing (its exit code 5), so an empty run can never pass.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
export QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
export PYTHONDONTWRITEBYTECODE=1
"$VENV/bin/python" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
