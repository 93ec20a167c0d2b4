#!/usr/bin/env bash
# Create .venv (once) and install the package with its test tools. Sourced by demo.sh and
# test.sh so that both quick-start commands work on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# Only reinstall when setup.py changed since the last install (keeps repeated runs fast).
stamp=.venv/.v2x_vlm_ros-installed
if [ ! -f "$stamp" ] || [ setup.py -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first, pinned: the local CPU build (a looser pin pulls the CUDA packages);
  # setuptools < 80 because colcon-core requires it (torch would pull a newer one)
  .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}" "setuptools<80"
  .venv/bin/python -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
