"""The HTML reports in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by
playwright) opens a one-configuration report and a 16-row study report, and checks that every
image loaded, that the page logged no error, and that no heading, paragraph or table cell lies
over an image. A full-page screenshot of each is kept (the folder is printed; copied to
``$CALIBKIT_TEST_ARTIFACTS`` too where it is set), for a person to look at.

The scores are synthetic (numpy), so no model is loaded. Skipped, with the reason, where
/usr/bin/chromium or the playwright package is missing (``apt-get install chromium``;
playwright is in the dev extra).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import calibkit as ck
from calibkit.comparison import compare
from calibkit.evaluation import evaluate
from calibkit.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: the tests run as root on CI; the rest keeps the browser off the network and quiet.
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]

#: In the page: each image's size as loaded, and every text element whose box overlaps an image's.
CHECK_PAGE = """() => {
  const imgs = [...document.images];
  const box = e => e.getBoundingClientRect();
  const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1
                         && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  const texts = [...document.querySelectorAll("h1, h2, h3, h4, h5, h6, p, li, th, td, caption, figcaption, pre")]
    .filter(e => e.innerText.trim() && box(e).width > 0 && box(e).height > 0);
  const clashes = [];
  for (const img of imgs) {
    for (const t of texts) {
      if (t.contains(img)) continue;  // a cell or paragraph holding the image itself
      if (overlap(box(t), box(img))) {
        clashes.push(`<${t.tagName.toLowerCase()}> "${t.innerText.trim().slice(0, 60)}" over ${img.getAttribute("src")}`);
      }
    }
  }
  return {
    images: imgs.map(i => ({src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth})),
    texts: texts.length,
    clashes: clashes,
  };
}"""


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed "
                                                                 "(pip install -e '.[dev]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


def _open_and_check(browser, index: Path, shot: Path) -> dict:
    """Open ``index`` (file://), save a full-page screenshot to ``shot``, and return CHECK_PAGE's findings
    with the page's console errors and uncaught exceptions."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console, thrown = [], []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: thrown.append(str(e)))
    page.goto(index.as_uri(), wait_until="load")
    found = page.evaluate(CHECK_PAGE)
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    found.update(console=console, thrown=thrown)
    return found


def _keep(shot: Path) -> None:
    print(f"screenshot: {shot}")
    where = os.environ.get("CALIBKIT_TEST_ARTIFACTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(where) / shot.name)
        print(f"copied to {Path(where) / shot.name}")


def _assert_renders(found: dict, images: set[str]) -> None:
    loaded = {i["src"] for i in found["images"] if i["complete"] and i["width"] > 0}
    assert {i["src"] for i in found["images"]} >= images, found["images"]
    assert loaded == {i["src"] for i in found["images"]}, f"images that did not load: {found['images']}"
    assert found["texts"] > 5  # the check saw the page's text
    assert not found["console"], found["console"]
    assert not found["thrown"], found["thrown"]
    assert not found["clashes"], "\n".join(found["clashes"])


def _scores(rng: np.random.Generator, y: np.ndarray, k: int, signal: float, scale: float) -> np.ndarray:
    """n×k class log-probabilities: the true class nudged up by ``signal``, then sharpened by ``scale``."""
    z = rng.normal(size=(len(y), k)) + signal * np.eye(k)[y]
    z *= scale
    return z - np.logaddexp.reduce(z, axis=1, keepdims=True)


def test_a_one_configuration_report_renders_in_chromium(browser, tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=600)
    ev = evaluate(_scores(rng, y, 3, 1.5, 2.5), y, {"temperature": ck.TemperatureScaling(), "vector": ck.VectorScaling()},
                  classes=[0, 1, 2], n_boot=20, info={"model": "synthetic", "template": "Review: {text}\nSentiment:"},
                  progress=False)
    folder = write_report(ev, tmp_path / "report", progress=False)
    found = _open_and_check(browser, folder / "index.html", tmp_path / "report.png")
    _keep(tmp_path / "report.png")
    per_class = {p.name for p in folder.glob("reliability_classwise_*.png")}
    assert len(per_class) == 3  # uncalibrated and the two calibrators, one-vs-rest per class
    _assert_renders(found, {"reliability.png"} | per_class)


def test_a_sixteen_row_study_report_renders_in_chromium(browser, tmp_path) -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=600)
    configs = {(template, model): _scores(rng, y, 2, signal, scale)
               for template, signal in (("t1", 1.0), ("t2", 2.0)) for model, scale in (("small", 0.5), ("large", 3.0))}
    calibrators = {"temperature": ck.TemperatureScaling(), "platt": ck.PlattScaling(),
                   "histogram": ck.HistogramBinning()}
    cmp = compare(configs, y, calibrators, classes=[0, 1], factors=["template", "model"], n_boot=20,
                  info={"model": "synthetic"}, progress=False)
    assert len(cmp.table) == 16  # four configurations, each uncalibrated and with three calibrators
    folder = write_report(cmp, tmp_path / "study", progress=False)
    found = _open_and_check(browser, folder / "index.html", tmp_path / "study.png")
    _keep(tmp_path / "study.png")
    _assert_renders(found, {"reliability.png", "risk_coverage.png"})
