#!/usr/bin/env bash
# Issue 21's evidence, re-runnable on any checkout: module sizes, duplicate code, mypy, import layers.
#   bash scripts/core_evidence.sh [CHECKOUT]    (default: this one; tools from this checkout's .venv)
# CHECKOUT's own pyproject.toml configures mypy and lint-imports, so an older checkout is judged by its own rules.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
tree="$(cd "${1:-$here}" && pwd)"
bin="$here/.venv/bin"
cd "$tree"
echo "# $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git log -1 --format=%cd --date=iso 2>/dev/null)"
echo "## lines per module of the torch adapter (src/gwa/torch)"
wc -l src/gwa/torch/*.py | sort -n
echo "## the ten largest modules of src/gwa"
find src/gwa -name '*.py' -print0 | xargs -0 wc -l | grep -v ' total$' | sort -n | tail -10
echo "## duplicate code (pylint duplicate-code, 6+ similar lines; comments, docstrings and imports ignored)"
dups="$("$bin/pylint" --disable=all --enable=duplicate-code --min-similarity-lines=6 --ignore-imports=y src/gwa 2>/dev/null)"
grep -E '^==' <<<"$dups" | paste - - || echo "none"
echo "## mypy: the checkout's own configuration, then every package (src/gwa)"
"$bin/mypy" --no-incremental 2>&1 | tail -1
"$bin/mypy" --no-incremental --ignore-missing-imports --follow-imports=silent src/gwa 2>&1 | tail -1
echo "## lint-imports (the checkout's own contracts)"
PYTHONPATH="$tree/src" "$bin/lint-imports" 2>&1 | grep -E 'KEPT|BROKEN|Contracts'
