#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine: Fashion-MNIST from Debian, and a
# Python 3.12 virtual environment in .venv with requirements.txt installed.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

find_python() {
  for candidate in python3.12 "$(pyenv root 2>/dev/null)/versions/3.12.1/bin/python"; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  if PYENV_VERSION=3.12.1 python3.12 -c '' 2>/dev/null; then
    echo "env PYENV_VERSION=3.12.1 python3.12"; return
  fi
  echo "setup.sh: error: Python 3.12 not found; install it (e.g. apt-get install python3.12 python3.12-venv, or pyenv install 3.12)" >&2
  exit 1
}

if [ ! -x .venv/bin/python ]; then
  $(find_python) -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements.txt
# The project itself, editable: `import mfgr_jax` and method plugins work from any folder.
.venv/bin/python -m pip install -qq --no-deps -e .
