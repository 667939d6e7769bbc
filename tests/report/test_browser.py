"""The HTML report in a real browser: headless Chromium loads it offline, every image decodes, nothing is logged
to the console, the page lays out within 1400 px, and the worst-samples table sorts on a click.

Chromium is Debian's ``chromium`` package (``scripts/setup.sh`` installs it where apt-get exists).
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess

import numpy as np
import pytest

import gwa
from gwa.rundir import RunWriter, class_row

pytest.importorskip("matplotlib")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,  # a headless Chromium per page
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs it)"),
]
WIDTH = 1400

#: Injected first in <head>: records console errors and failed loads, then after the load event measures the
#: images and the layout, clicks the "sample id" header of the sortable table, and writes it all into the DOM.
CHECKER = """<script>
window.__errors = [];
var __error = console.error;
console.error = function () { window.__errors.push("console.error: " + Array.from(arguments).join(" "));
                              __error.apply(console, arguments); };
window.addEventListener("error", function (e) {
  window.__errors.push(e.message || ("failed to load " + (e.target && (e.target.src || e.target.href))));
}, true);
window.addEventListener("load", function () {
  var vw = window.innerWidth, out = {errors: window.__errors, viewport: vw,
    scrollWidth: document.documentElement.scrollWidth, bodyWidth: document.body.getBoundingClientRect().width};
  out.images = Array.from(document.images).map(function (img) {
    var r = img.getBoundingClientRect();
    return {decoded: img.complete && img.naturalWidth > 0, cls: img.className, width: r.width, right: r.right};
  });
  out.overflowing = Array.from(document.querySelectorAll("body *")).filter(function (el) {
    return el.getBoundingClientRect().right > vw + 0.5; }).map(function (el) { return el.tagName; });
  var table = document.querySelector("table.sortable");
  if (table) {
    var col = Array.from(table.tHead.rows[0].cells).findIndex(function (th) { return th.textContent === "sample id"; });
    table.tHead.rows[0].cells[col].click();
    out.sortedIds = Array.from(table.tBodies[0].rows).map(function (r) { return Number(r.cells[col].textContent); });
  }
  var pre = document.createElement("pre"); pre.id = "gwa-check"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(url: str, profile, *extra: str) -> subprocess.CompletedProcess:
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        f"--window-size={WIDTH},900",
        "--virtual-time-budget=10000",
        *extra,
        url,
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def check_page(html_path, tmp_path) -> tuple[dict, list[str]]:
    """Load a copy of the page with the checker; returns (the checker's findings, the page's console lines)."""
    page = html_path.read_text(encoding="utf-8")
    probe = tmp_path / f"probe_{html_path.stem}.html"
    probe.write_text(page.replace("<head>", "<head>" + CHECKER, 1), encoding="utf-8")
    done = _chromium(probe.as_uri(), tmp_path / "profile", "--dump-dom")
    found = re.search(r'<pre id="gwa-check">(.*?)</pre>', done.stdout, re.DOTALL)
    assert found, f"the checker did not run: {done.stderr[-2000:]}"
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    text = (
        found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )
    return json.loads(text), console


def _run(path, *, noise: bool, previews: str, n=120, epochs=8, seed=0):
    """A run directory as a trainer writes it: labels, per-sample alignment and predictions, previews; with noise,
    the per-class evidence too (classes.jsonl: the report's per-class section)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    mask = np.zeros(n, bool)
    if noise:
        mask[rng.choice(n, n // 5, replace=False)] = True
    writer = RunWriter(
        path,
        {"framework": "loop", "model": "mlp", "max_epochs": epochs},
        n,
        labels=labels,
        noise_mask=mask if noise else None,
    )
    for e in range(1, epochs + 1):
        scores = np.clip(np.where(mask, -0.3, 0.3) * (1 - np.exp(-e / 3)) + rng.normal(0, 0.1, n), -1, 1)
        pred = np.where(rng.random(n) < 0.8, labels, (labels + 1) % 4)
        writer.log_epoch(
            {
                "epoch": e,
                "train_loss": 1.0 / e,
                "train_acc": float((pred == labels).mean()),
                **gwa.summarize(scores).metrics(),
            },
            {"alignment": scores, "pred": pred},
        )
        if noise:
            writer.log_classes(class_row(e, gwa.class_evidence(scores, labels, pred, 4)))
    if previews == "image":
        writer.write_previews(np.arange(n), rng.normal(size=(n, 8, 8)).astype(np.float32))
    else:
        writer.write_previews(np.arange(n), np.sin(np.linspace(0, 6, 30))[None] * rng.normal(size=(n, 1)))
    writer.write_summary({"criteria": {"gwa": {"epoch": epochs}, "last": {"epoch": epochs}}})
    writer.finish()
    return path


@pytest.mark.parametrize(("noise", "previews"), [(True, "image"), (False, "signal")])
def test_report_renders_in_chromium_offline_without_errors_at_1400px(tmp_path, noise, previews):
    from gwa.report import write_report

    html_path = write_report(_run(tmp_path / "run", noise=noise, previews=previews))
    page = html_path.read_text(encoding="utf-8")
    # Self-contained: nothing to fetch (every src is a data URI; no link, no external script).
    assert not re.findall(r'(?:src|href)="(?!data:|#)', page)
    found, console = check_page(html_path, tmp_path)
    assert found["errors"] == [] and console == []
    figures = [img for img in found["images"] if img["cls"] == "figure"]
    thumbs = [img for img in found["images"] if img["cls"] == "thumb"]
    # curves, distribution, data map; and with class evidence the per-class panel
    assert len(figures) == (4 if noise else 3) and all(img["decoded"] for img in found["images"])
    assert len(thumbs) == (20 if previews == "image" else 0)  # 1-D signals are inline SVG sparklines
    # Laid out at 1400 px: no horizontal overflow, the content column uses its width, figures are readable.
    assert found["viewport"] == WIDTH and found["scrollWidth"] <= WIDTH and found["overflowing"] == []
    assert found["bodyWidth"] >= 1000 and all(img["width"] >= WIDTH * 0.45 for img in figures)
    assert all(img["right"] <= WIDTH for img in found["images"])
    # The interactive touch: a click on "sample id" sorts the worst-samples table by it.
    assert len(found["sortedIds"]) == 20 and found["sortedIds"] == sorted(found["sortedIds"])


def test_screenshot_at_1400px(tmp_path):
    from gwa.report import write_report

    html_path = write_report(_run(tmp_path / "run", noise=True, previews="image"))
    shot = tmp_path / "shot.png"
    done = _chromium(html_path.as_uri(), tmp_path / "profile", f"--screenshot={shot}")
    assert shot.exists(), done.stderr[-2000:]
    width, height = struct.unpack(">II", shot.read_bytes()[16:24])  # the PNG header's IHDR
    assert (width, height) == (WIDTH, 900)


def test_the_checker_sees_a_broken_image_and_a_console_error(tmp_path):
    """The browser checks can fail: a page with a broken image and a console error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><title>x</title></head><body><img class="figure" '
        'src="data:image/png;base64,AAAA"><script>console.error("boom")</script></body></html>'
    )
    found, console = check_page(bad, tmp_path)
    assert found["images"][0]["decoded"] is False
    assert "console.error: boom" in found["errors"] and any("boom" in line for line in console)
