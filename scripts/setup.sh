#!/usr/bin/env bash
# Create or reuse .venv/ and install the project into it, idempotently.
#
# Why a script and not a bare `pip install`: torch must be installed first, on its own, as
# torch==2.13.0 (the CPU wheel); if the resolver meets an unpinned torch first it pulls a
# multi-GB CUDA build. A stamp of pyproject.toml's hash makes a second run install nothing.
#   bash scripts/setup.sh          # runtime dependencies
#   bash scripts/setup.sh --test   # plus test dependencies (pytest, moto)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null 2>&1 || python_bin=python3
if [ -x .venv/bin/python ] && ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    echo "setup: .venv is incomplete (no pip: an interrupted creation?): making it again"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($python_bin --version)"
    "$python_bin" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)${extras:+-test}"
if [ -f "$stamp" ]; then
    echo "setup: .venv is up to date (nothing to install)"
    exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    echo "setup: installing torch==2.13.0 (CPU wheel)"
    .venv/bin/python -m pip install --quiet torch==2.13.0
fi
echo "setup: installing the project${extras}"
.venv/bin/python -m pip install --quiet -e ".${extras}"
.venv/bin/python -m pip check
rm -f .venv/.installed-*
touch "$stamp"
[ -n "$extras" ] && touch "${stamp%-test}"
echo "setup: done"
