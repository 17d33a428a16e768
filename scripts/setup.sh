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
# The musicnn checkpoints (issue 17): the wheel ships TensorFlow-1 checkpoints, but its code needs
# TensorFlow 1 and numpy<1.17, so it is downloaded (never installed), checked against a pinned
# sha256 and unpacked where labeler/musicnn/wheel.py looks: .venv/share/mood-labeler/musicnn-0.1.0.
# Idempotent: a complete earlier unpack is kept. Training a MusiCNN model needs it; labelling does not.
musicnn_dir=".venv/share/mood-labeler/musicnn-0.1.0"
musicnn_sha256="f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
if [ ! -f "$musicnn_dir/.complete" ]; then
    echo "setup: fetching the musicnn==0.1.0 checkpoints (pip download --no-deps; no TensorFlow)"
    staging="$(mktemp -d .venv/.musicnn-XXXXXX)"
    .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: musicnn==0.1.0 -d "$staging"
    wheel="$staging/musicnn-0.1.0-py3-none-any.whl"
    actual="$(sha256sum "$wheel" | cut -d' ' -f1)"
    if [ "$actual" != "$musicnn_sha256" ]; then
        echo "setup: refusing $wheel: sha256 $actual is not the pinned $musicnn_sha256" >&2
        rm -rf "$staging"
        exit 1
    fi
    .venv/bin/python -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$wheel" "$staging/unpacked"
    rm -rf "$musicnn_dir"
    mkdir -p "$(dirname "$musicnn_dir")"
    mv "$staging/unpacked" "$musicnn_dir"
    rm -rf "$staging"
    touch "$musicnn_dir/.complete"
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
