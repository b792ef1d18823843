"""The pages in a real browser: Debian's Chromium (headless) driven by Playwright for Python.

A copy of report.html alone shows every figure; the leaderboard loads with no console error,
sorting and filtering change its table, its plot is drawn (screenshots checked pixel by pixel) and
a score's link lands on its table in the run's report. Marked `browser`: `make test` leaves them
out (pyproject's addopts); `make test-browser` runs them after `pip install '.[browser]'` and
`apt-get install chromium` (CI does both in its own step). LORAOCEAN_CHROMIUM names another
Chromium executable.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest

from test_report_leaderboard import make_runs
from loraocean.report.leaderboard import write_leaderboard

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("LORAOCEAN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A Chromium with a fresh profile; yields a function that opens a page and records its errors."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: pip install '.[browser]' (see `make test-browser`)")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium, or set LORAOCEAN_CHROMIUM")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=ARGS, viewport={"width": 1400, "height": 1000})

        def open_page(path: Path):
            page = context.new_page()
            page.errors = []  # console errors, uncaught exceptions, failed or outside requests
            page.on("console", lambda m: page.errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: page.errors.append(f"exception: {e}"))
            page.on("requestfailed", lambda r: page.errors.append(f"failed: {r.url}"))
            page.on("request", lambda r: None if r.url.startswith(("file:", "data:")) else
                    page.errors.append(f"outside request: {r.url}"))
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("load")
            return page

        yield open_page
        context.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("browser-runs"))


def pixels(png: bytes):
    """(share of pixels that are not near-white, number of distinct colours) of a screenshot."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    inked = int((rgb.min(axis=1) < 235).sum())
    return inked / len(rgb), len(np.unique(rgb, axis=0))


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    """`loraocean run ci --quick`: the real stages on a tiny random llama (about 15 s)."""
    import subprocess
    import sys

    run_dir = tmp_path_factory.mktemp("ci") / "run"
    exe = str(Path(sys.executable).parent / "loraocean")
    proc = subprocess.run([exe, "run", "ci", "--quick", "--run-dir", str(run_dir)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


@pytest.mark.parametrize("which", ["stand-in run", "ci --quick run"])
def test_a_copy_of_report_html_alone_shows_every_figure(browser, request, which, tmp_path):
    run = request.getfixturevalue("runs")[0] if which == "stand-in run" else request.getfixturevalue("ci_run")
    alone = tmp_path / "copied" / "report.html"
    alone.parent.mkdir()
    shutil.copy(run / "report.html", alone)  # no figures/ folder beside it
    page = browser(alone)
    figures = len(list((run / "figures").glob("*.png")))
    images = page.locator("img")
    assert images.count() == figures >= 4
    for i in range(figures):
        img = images.nth(i)
        img.scroll_into_view_if_needed()
        assert img.is_visible()
        assert img.evaluate("e => e.complete && e.naturalWidth > 100 && e.naturalHeight > 100")
        inked, colours = pixels(img.screenshot())
        assert inked > 0.05 and colours > 20, (i, inked, colours)  # a drawn figure, not a blank box
    assert page.errors == []
    page.close()


def visible_rows(page) -> list[dict]:
    return page.evaluate("""() => Array.from(document.querySelectorAll('#board tbody tr'))
        .filter(tr => !tr.hidden).map(tr => ({...tr.dataset,
            mean: tr.querySelector('td.mean').dataset.value, meanText: tr.querySelector('td.mean').textContent,
            params: tr.querySelector('td.cost.params').dataset.value}))""")


def test_the_leaderboard_sorts_filters_and_draws_its_plot(browser, runs, tmp_path):
    page_path, _ = write_leaderboard(runs, tmp_path / "board")
    page = browser(page_path)
    rows = visible_rows(page)
    # at first: the first convention, every model
    assert {r["convention"] for r in rows} == {"lm-eval"} and {r["model"] for r in rows} == {"tiny-llama", "tiny-qwen2"}
    total = page.locator("#board tbody tr").count()
    assert page.locator("#shown").inner_text() == f"{len(rows)} of {total} rows shown"

    # sorting: the mean, best first, then reversed; trainable parameters, smallest first
    before = [r["run"] + r["method"] + r["selection"] for r in rows]
    page.locator("#board th", has_text="mean").click()
    means = [float(r["mean"]) for r in visible_rows(page)]
    assert means == sorted(means, reverse=True)
    assert [r["run"] + r["method"] + r["selection"] for r in visible_rows(page)] != before
    assert page.locator("#board th", has_text="mean").get_attribute("aria-sort") == "descending"
    page.locator("#board th", has_text="mean").click()
    means = [float(r["mean"]) for r in visible_rows(page)]
    assert means == sorted(means)
    page.locator("#board th", has_text="trainable params").click()
    params = [float(r["params"]) for r in visible_rows(page)]
    assert params == sorted(params) and params[0] == 0 and params[-1] == 5000

    # filters: a model, a selection (the references stay), a task family (its columns and mean)
    page.select_option("#filter-model", "tiny-qwen2")
    rows = visible_rows(page)
    assert rows and {r["model"] for r in rows} == {"tiny-qwen2"}
    page.select_option("#filter-model", "all")
    page.select_option("#filter-selection", "manual")
    assert {r["selection"] for r in visible_rows(page)} == {"manual", "none"}
    page.select_option("#filter-selection", "all")
    page.select_option("#filter-family", "nlu")  # bb_snarks: run-b's only
    headers = page.locator("#board thead th:visible").all_inner_texts()
    assert [h.split("\n")[0] for h in headers[5:-4]] == ["bb_snarks"]
    rows = visible_rows(page)
    assert {r["run"] for r in rows} == {"run-b"}
    for r in rows:  # the mean is that family's, as Python formatted it
        snarks = page.locator(f"#board tbody tr[data-run='run-b'][data-method='{r['method']}']"
                              f"[data-selection='{r['selection']}'][data-convention='lm-eval'] td.score[data-family='nlu']")
        assert r["meanText"] == snarks.inner_text().split(" ")[0]
    page.select_option("#filter-family", "all")

    # the plot: one point per row shown, drawn (pixels), and moved by another cost
    plot = page.locator("#plot")
    plot.scroll_into_view_if_needed()
    assert plot.is_visible()
    points = page.locator("#plot > circle")  # legend circles sit beside the data points
    methods = {r["method"] for r in visible_rows(page)}
    assert points.count() == len(visible_rows(page)) + len(methods)
    inked, colours = pixels(plot.screenshot())
    assert inked > 0.02 and colours > 20, (inked, colours)
    where = points.evaluate_all("cs => cs.map(c => c.getAttribute('cx'))")
    page.select_option("#xaxis", "params")
    assert points.evaluate_all("cs => cs.map(c => c.getAttribute('cx'))") != where
    assert page.errors == []
    page.close()


def test_a_score_links_to_its_table_in_the_runs_report(browser, runs, tmp_path):
    page_path, _ = write_leaderboard(runs, tmp_path / "board")
    page = browser(page_path)
    link = page.locator("#board tbody tr[data-method='loramoe'][data-selection='manual'] td.score a").first
    target = link.get_attribute("href")
    link.click()
    page.wait_for_load_state("load")
    path, _, ident = target.partition("#")
    assert page.url == f"{(page_path.parent / path).resolve().as_uri()}#{ident}"
    assert ident == "results-tiny-llama-lm-eval-manual"
    landed = page.evaluate("() => { const e = document.getElementById(location.hash.slice(1));"
                           " return e && e.textContent; }")
    assert landed.startswith("Accuracy (%) by method and target task, manual selection")
    assert page.errors == []
    page.close()
