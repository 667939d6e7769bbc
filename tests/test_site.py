"""The documentation site: every ```python block of its pages runs (those of README.md and docs/*.md in
tests/test_doc_snippets.py, the pages under docs/guide/ here, with the same preludes), ``mkdocs build --strict``
passes, and the built site opens in headless Chromium without console errors or broken images, with a search box.
"""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from test_doc_snippets import (
    FLAX_LOOP,
    HF,
    LIGHTNING,
    TORCH,
    TORCHRUN,
    _check_flax_loop,
    _check_hf,
    _check_lightning,
    _check_recorder,
    _check_torchrun,
    _free_port,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Pages below docs/ (docs/*.md and the README are tests/test_doc_snippets.py's).
PAGES = sorted(p for p in DOCS.glob("*/**/*.md") if "data" not in p.relative_to(DOCS).parts)


def _check_recorder_and_tensorboard(ns):
    _check_recorder(ns)
    assert list(Path("runs/tb").glob("events.out.tfevents.*")), "no TensorBoard event file in runs/tb"


#: (page under docs/, heading of the section the block stands in) -> (prelude, check)
SETUPS = {
    ("guide/pytorch.md", "Reports and loggers: `RunRecorder`"): (TORCH, _check_recorder_and_tensorboard),
    ("guide/lightning.md", "Lightning"): (LIGHTNING, _check_lightning),
    ("guide/huggingface.md", "Hugging Face `Trainer`"): (HF, _check_hf),
    ("guide/torchrun.md", "torchrun (DistributedDataParallel)"): (TORCHRUN, _check_torchrun),
    ("guide/flax.md", "Flax"): (FLAX_LOOP, _check_flax_loop),
}
NEEDS = {"guide/lightning.md": "lightning", "guide/huggingface.md": "transformers", "guide/flax.md": "flax"}


def _snippets():
    out = []
    for page in PAGES:
        name, section, seen = page.relative_to(DOCS).as_posix(), None, {}
        for block in re.finditer(r"^(##? [^\n]*)$|^```python\n(.*?)^```$", page.read_text(), re.M | re.S):
            if block.group(1):
                section = block.group(1).split(" ", 1)[1].strip()
                continue
            n = seen[section] = seen.get(section, 0) + 1
            key = (name, section if n == 1 else f"{section}#{n}")
            out.append(pytest.param(key, block.group(2), id=f"{key[0]}:{key[1]}"))
    return out


def test_every_site_snippet_has_a_setup():
    keys = {p.values[0] for p in _snippets()}
    assert keys == set(SETUPS), (
        f"snippets without a setup: {keys - set(SETUPS)}; stale setups: {set(SETUPS) - keys}"
    )


@pytest.mark.parametrize(("key", "code"), _snippets())
def test_site_snippet_runs(key, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if key[0] in NEEDS:
        pytest.importorskip(NEEDS[key[0]])
    if key[0] == "guide/pytorch.md":
        pytest.importorskip("tensorboard")
    prelude, check = SETUPS[key]
    ns: dict = {}
    exec(prelude.replace("{port}", str(_free_port())), ns)
    exec(compile(code, f"docs/{key[0]}:{key[1]}", "exec"), ns)
    check(ns)


# ------------------------------------------------------------------------------------------------ the built site
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Injected first in <head> of a built page: records console errors and failed loads, and after the load event
#: (and the time the search worker needs) writes what it saw into the DOM.
CHECKER = """<script>
window.__errors = [];
var __error = console.error;
console.error = function () { window.__errors.push("console.error: " + Array.from(arguments).join(" "));
                              __error.apply(console, arguments); };
window.addEventListener("error", function (e) {
  window.__errors.push(e.message || ("failed to load " + (e.target && (e.target.src || e.target.href))));
}, true);
window.addEventListener("load", function () { setTimeout(function () {
  var out = {errors: window.__errors, title: document.title,
    search: !!document.querySelector("input.md-search__input"),
    images: Array.from(document.images).map(function (img) {
      return {src: img.getAttribute("src"), decoded: img.complete && img.naturalWidth > 0}; }),
    headings: Array.from(document.querySelectorAll("h1, h2")).map(function (h) { return h.textContent; })};
  var pre = document.createElement("pre"); pre.id = "gwa-check"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 2000); });
</script>"""


@functools.cache
def _built_site(tmp_root: Path) -> Path:
    site = tmp_root / "site"
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    return _built_site(tmp_path_factory.mktemp("docs"))


def _open(site: Path, page: str, tmp_path: Path) -> tuple[dict, list[str]]:
    """Serve the site on 127.0.0.1 (the search worker cannot load from file://), load ``page`` with the checker in
    headless Chromium, and return (its findings, the console lines Chromium logged)."""
    html = site / page / "index.html"
    html.write_text(
        html.read_text(encoding="utf-8").replace("<head>", "<head>" + CHECKER, 1), encoding="utf-8"
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={tmp_path / 'profile'}",
                "--enable-logging=stderr",
                "--v=0",
                "--window-size=1400,900",
                "--virtual-time-budget=15000",
                "--dump-dom",
                f"http://127.0.0.1:{server.server_address[1]}/{page}/",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    found = re.search(r'<pre id="gwa-check">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, f"the checker did not run on {page}: {done.stderr[-2000:]}"
    text = (
        found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    return json.loads(text), [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)")
@pytest.mark.parametrize(
    ("page", "heading", "images"),
    [
        ("", "gwa — Gradient-Weight Alignment", 0),
        ("api/gwa", "gwa", 0),
        ("guide/getting-started", "Getting started", 1),
    ],
)
def test_built_site_opens_in_chromium(site, page, heading, images, tmp_path):
    found, console = _open(site, page.strip("/") if page else ".", tmp_path)
    assert found["errors"] == [] and console == [], (found["errors"], console)
    assert found["search"], "no search box"
    assert len(found["images"]) >= images and all(img["decoded"] for img in found["images"]), found["images"]
    assert heading in [h.strip().rstrip("¶").strip() for h in found["headings"]]


@pytest.mark.slow
def test_built_site_has_the_api_of_every_public_module(site):
    """The API reference names every public name of the modules it documents (``__all__``)."""
    import importlib

    for page, module in [
        ("gwa", "gwa"),
        ("policy", "gwa.policy"),
        ("torch", "gwa.torch"),
        ("jax", "gwa.jax"),
        ("integrations", "gwa.integrations"),
        ("rundir", "gwa.rundir"),
    ]:
        if module in ("gwa.torch", "gwa.integrations"):
            pytest.importorskip("torch")
        if module == "gwa.jax":
            pytest.importorskip("jax")
        html = (site / "api" / page / "index.html").read_text(encoding="utf-8")
        missing = [n for n in importlib.import_module(module).__all__ if f'id="{module}.{n}"' not in html]
        assert missing == [], f"{module}: no API entry for {missing}"
    # The site is offline: no Google fonts, nothing fetched from another host at load time.
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "fonts.googleapis" not in home and not re.findall(
        r'<(?:script|link)[^>]+(?:src|href)="https?://', home
    )
