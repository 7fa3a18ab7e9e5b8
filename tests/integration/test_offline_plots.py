"""`dvc plots show` and `dvc plots diff` without the network: the project's template (.dvc/config
plots.html_template) carries vega, vega-lite and vega-embed, so a real headless Chromium, offline, draws
the training curves and every confusion matrix."""

import filecmp
import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

from support import PROJECT_ROOT, run

TEMPLATE = PROJECT_ROOT / "tools/plots/offline.html"
DRAWN = 200
"""Pixels each side of a plot's canvas at least: a smaller one (vega-embed's empty div) is not drawn."""


def test_the_template_is_built_from_the_pinned_npm_packages(tmp_path):
    """tools/plots/ is what tools/build_plots_template.py makes of tools/node_modules (`npm ci`)."""
    run([sys.executable, str(PROJECT_ROOT / "tools/build_plots_template.py"), str(tmp_path)], PROJECT_ROOT)
    assert (tmp_path / "offline.html").read_bytes() == TEMPLATE.read_bytes()
    names = sorted(p.name for p in (tmp_path / "licenses").iterdir())
    assert names == ["vega-embed.txt", "vega-lite.txt", "vega.txt"]
    assert filecmp.cmpfiles(tmp_path / "licenses", PROJECT_ROOT / "tools/plots/licenses", names, shallow=False)[0] == names


def plots_configured(project: Path) -> int:
    """How many plots `dvc plots` draws for ``project``, as its dvc.yaml configures them: a top-level plot
    that maps its own ``y`` over files is one figure; any other plot path is one figure per file, a
    directory one per file in it (evaluate's confusion/ and reliability/ hold one CSV per model)."""
    config = yaml.safe_load((project / "dvc.yaml").read_text())
    entries = [*config.get("plots", []), *(entry for stage in config["stages"].values()
                                          for entry in stage.get("plots", []))]
    count = 0
    for entry in entries:
        name, options = (entry, None) if isinstance(entry, str) else next(iter(entry.items()))
        if isinstance((options or {}).get("y"), dict):
            count += 1
        else:
            path = project / name
            count += sum(p.is_file() for p in path.rglob("*")) if path.is_dir() else 1
    return count


def offline_render(browser, page, tmp_path, expected: int) -> list[dict]:
    """Open ``page`` with the network off; once ``expected`` plots are drawn, return each (its div's id and
    its canvas's size)."""
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.emulateNetworkConditions",
                            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1})
    browser.get_log("browser")
    browser.get_log("performance")
    browser.get(page.as_uri())
    # vegaEmbed('#id', spec) gives the div of that id the class vega-embed before it draws: wait for canvases
    drawn = """return Array.from(document.querySelectorAll('div[id].vega-embed')).map(e => {
        const c = e.querySelector('canvas, svg'); const r = c ? c.getBoundingClientRect() : {width: 0, height: 0};
        return {id: e.id, width: r.width, height: r.height}; })"""
    try:
        WebDriverWait(browser, 60).until(
            lambda d: sum(p["width"] > DRAWN and p["height"] > DRAWN for p in d.execute_script(drawn)) >= expected)
    except TimeoutException:
        pass  # the test's assertions say which plots are missing or not drawn
    finally:
        browser.save_screenshot(str(tmp_path / "plots.png"))
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    requests = [json.loads(e["message"])["message"].get("params", {}).get("request", {}).get("url", "")
                for e in browser.get_log("performance")]
    assert not [url for url in requests if url.startswith(("http:", "https:"))]
    return browser.execute_script(drawn)


@pytest.mark.parametrize("command", [["show"], ["diff", "HEAD"]])
def test_dvc_plots_render_offline(pipeline_project, browser, tmp_path, command):
    project = pipeline_project[0]
    out = tmp_path / "plots"
    run(["dvc", "plots", *command, "-o", str(out)], project)
    page = out / "index.html"
    html = page.read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", html), "a script loaded from elsewhere"
    assert "cdn.jsdelivr.net" not in html
    expected = plots_configured(project)
    plots = offline_render(browser, page, tmp_path, expected)
    ids = [p["id"] for p in plots]
    assert len(ids) == expected, ids  # all drawn, and no other: the ids below name each one
    assert sum(i.startswith("Training_curves") for i in ids) == 1, ids
    assert sorted(i for i in ids if "confusion" in i) == [f"reports_eval_confusion_{k}_csv"
                                                          for k in ("baseline", "concise", "scratch")], ids
    assert sorted(i for i in ids if "reliability" in i) == [f"reports_eval_reliability_{k}_csv"
                                                            for k in ("baseline", "concise", "scratch")], ids
    assert all(p["width"] > DRAWN and p["height"] > DRAWN for p in plots), plots
