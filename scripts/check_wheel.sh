#!/usr/bin/env bash
# The release a user installs: build the sdist and the wheel, check their metadata (twine), install the wheel into
# a fresh virtual environment with the extra `gwa demo` needs, and run the demo from there (not from the source
# tree). Dependencies are kept in a wheelhouse between runs, so torch and the rest are downloaded once.
# Usage: bash scripts/check_wheel.sh [WORKDIR]   (default: a temporary directory, removed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORK=${1:-$(mktemp -d)}
mkdir -p "$WORK"
[ $# -ge 1 ] || trap 'rm -rf "$WORK"' EXIT
start=$SECONDS
"$PY" -m build --sdist --wheel --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; exit 1; }
"$PY" -m twine check --strict "$WORK"/dist/*
wheel=$(ls "$WORK"/dist/gwa_alignment-*.whl)
echo "check_wheel: built $(basename "$wheel") and $(basename "$WORK"/dist/gwa_alignment-*.tar.gz) in $((SECONDS - start)) s"
python3 -m venv "$WORK/venv" 2>/dev/null || "$PY" -m venv --without-pip "$WORK/venv"
[ -x "$WORK/venv/bin/pip" ] || "$PY" -m pip --python "$WORK/venv/bin/python" install --quiet pip
# Which torch: $GWA_CHECK_TORCH when set; else a torch wheel in pip's --find-links folders (a local CPU build installs
# in seconds, where the index's default build pulls several GB of CUDA libraries: 10 min on the first run here);
# else the development environment's version.
TORCH_PIN=${GWA_CHECK_TORCH:-$("$WORK/venv/bin/python" - <<'PYEOF'
import glob, os, subprocess, sys
tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
dirs = os.environ.get("PIP_FIND_LINKS", "").split()
dirs += subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.find-links"], capture_output=True,
                       text=True).stdout.split()
wheels = sorted({w for d in dirs for w in glob.glob(os.path.join(d, f"torch-*-{tag}-{tag}-*linux*.whl"))})
print(wheels[-1] if wheels else "")
PYEOF
)}
[ -n "$TORCH_PIN" ] || TORCH_PIN=$("$PY" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" 2>/dev/null || echo torch)
# pip's HTTP cache kept nothing here (each run downloaded every dependency again: 6 min), so the dependencies go to a
# wheelhouse kept between runs ($GWA_WHEELHOUSE, default .cache/wheelhouse): files already there are not fetched.
WHEELHOUSE=${GWA_WHEELHOUSE:-$ROOT/.cache/wheelhouse}
mkdir -p "$WHEELHOUSE"
quiet() { grep -v "is ignored: it is neither" || true; }
offline_install() {
  "$WORK/venv/bin/python" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" "$wheel[cli]" "$TORCH_PIN"
}
if ! offline_install >"$WORK/pip.log" 2>&1; then  # a first run, or new dependencies: fetch what is missing
  "$WORK/venv/bin/python" -m pip download --quiet --dest "$WHEELHOUSE" --find-links "$WHEELHOUSE" \
    "$wheel[cli]" "$TORCH_PIN" 2>&1 | quiet
  echo "check_wheel: dependencies fetched into $WHEELHOUSE at $((SECONDS - start)) s"
  offline_install 2>&1 | quiet
fi
echo "check_wheel: installed with the 'cli' extra ($(basename "$TORCH_PIN")) at $((SECONDS - start)) s"
cd "$WORK"  # away from the source tree: the demo must run from the installed wheel
"$WORK/venv/bin/python" -c "import gwa, sys; assert '/site-packages/' in gwa.__file__, gwa.__file__; print('gwa', gwa.__version__, 'from', gwa.__file__)"
"$WORK/venv/bin/gwa" demo --quick --out "$WORK/demo" >"$WORK/demo.log" 2>&1 || { cat "$WORK/demo.log"; exit 1; }
grep -q "GWA (gwa's default rule)" "$WORK/demo.log" && test -f "$WORK/demo/report/report.html"
echo "check_wheel: gwa demo --quick ran from the wheel; total $((SECONDS - start)) s"
