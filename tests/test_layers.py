"""The import-layering contract of pyproject.toml (ARCHITECTURE.md's layers) holds, and fails on a wrong-way import."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(tree / "src"), "PATH": str(LINT.parent)}
    return subprocess.run(
        [str(LINT), "--no-cache", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_its_layers():
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("_summary.py", "    from gwa.torch import GWATracker\n", "The core"),  # function-level
        ("report/_flag.py", "from gwa.runner import data\n", "The report reads only"),
        ("rundir/_writer.py", "import gwa.integrations\n", "The run directory depends"),
        ("policy/_criteria.py", "from gwa.rundir import load_run\n", "The core"),
    ],
)
def test_a_wrong_way_import_breaks_the_contract(tmp_path, module, line, contract):
    tree = _copy(tmp_path)
    path = tree / "src" / "gwa" / module
    text = path.read_text()
    if line.startswith("    "):  # inside a function, as a lazy import would be
        text += f"\n\ndef _wrong_way():\n{line}    return GWATracker\n"
    else:
        text += f"\n{line}"
    path.write_text(text)
    done = _lint(tree)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout and contract in done.stdout.replace("\n", " ")
