#!/usr/bin/env bash
# Create .venv (if missing) and install gwa (the distribution gwa-alignment) with every extra, the test tools and
# the documentation site's tools (MkDocs, Material, mkdocstrings).
# torch is pinned on purpose: an unpinned `torch` can pull a different multi-GB build. 2.14.1 with
# torchvision 0.29.1 is a pair that imports together; on a CPU-only machine you may instead install a
# CPU wheel of torch first (see README), and this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
if ! python -c "import torch, torchvision" 2>/dev/null; then
  python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
fi
python -m pip install --quiet -e ".[all,test,docs]"
# Headless Chromium for the browser test of the HTML report (tests/report/test_browser.py), where apt exists.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null \
    || echo "setup.sh: could not install chromium; tests/report/test_browser.py will be skipped" >&2
fi
python -c "import gwa, torch, jax, lightning, transformers, timm; print('gwa', gwa.__version__, '| torch', torch.__version__, '| jax', jax.__version__)"
