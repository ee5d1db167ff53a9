#!/usr/bin/env bash
# Runs the test suite. The session fixtures start (or reuse) the real services with the
# same code as `ioc services up`, and stop at the end those they started.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
# pytest exits 5 when it collected no test: that is a failure of the suite, not a pass.
if [ "$rc" -eq 5 ]; then echo "error: no tests were collected" >&2; exit 1; fi
exit "$rc"
