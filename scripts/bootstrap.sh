#!/usr/bin/env bash
# Creates .venv in the repo root with the `ioc` command and everything the tests need.
# Idempotent: a second run only re-checks. Used by `make demo` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python >= 3.11 is needed (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
stamp=.venv/.ioc-installed
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Reinstall when the dependency list changed since the last install.
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # (the grep hides pip warnings about optional local package mirrors of this machine)
  .venv/bin/python -m pip install -q -e ".[dev,bench]" 2> >(grep -v "^WARNING: Location" >&2)
  echo "$want" > "$stamp"
fi
