"""The report page opened in a real headless Chromium: every image decodes, the numbers are the metrics."""

import json

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

SCORED = ("scratch", "concise", "baseline")


@pytest.fixture(scope="module")
def opened(browser, pipeline_project):
    project = pipeline_project[0]
    page = project / "reports/report/report.html"
    browser.get_log("performance")  # drop what the blank start page logged
    browser.get(page.as_uri())
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
        and d.execute_script("return Array.from(document.images).every(i => i.complete)"))
    metrics = json.loads((project / "reports/eval/metrics.json").read_text())
    return browser, page, metrics


def test_the_page_loads_with_its_title(opened):
    browser, page, _ = opened
    assert browser.current_url == page.as_uri()
    assert browser.title == "Softmax regression on Fashion-MNIST"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Softmax regression on Fashion-MNIST"


def test_every_image_decodes(opened):
    browser, _, _ = opened
    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 8
    for img in images:
        state = browser.execute_script(
            "const i = arguments[0]; return [i.complete, i.naturalWidth, i.naturalHeight, i.alt];", img)
        complete, width, height, alt = state
        assert complete is True, alt
        assert width > 0 and height > 0, alt
        assert img.size["width"] > 0 and img.size["height"] > 0, alt
    # decode() rejects for an image that cannot be decoded
    failures = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        Promise.allSettled(Array.from(document.images).map(i => i.decode()))
            .then(r => done(r.filter(x => x.status === 'rejected').length));
    """)
    assert failures == 0


def test_shown_metrics_equal_metrics_json(opened):
    browser, _, metrics = opened
    cells = browser.find_elements(By.CSS_SELECTOR, "td.metric")
    shown = {(c.get_attribute("data-model"), c.get_attribute("data-metric")): c.text for c in cells}
    for name in SCORED:
        for metric in ("test_accuracy", "test_loss", "macro_f1", "test_ece", "test_ece_calibrated", "test_brier"):
            text = shown[(name, metric)]
            assert len(text.split(".")[1]) == 4, text
            assert float(text) == round(metrics[name][metric], 4), (name, metric, text)
            assert text == f"{metrics[name][metric]:.4f}"
    accuracies = {name: shown[(name, "test_accuracy")] for name in SCORED}
    assert all(0.8 < float(v) < 0.9 for v in accuracies.values()), accuracies


def test_no_request_leaves_the_page(opened):
    browser, page, _ = opened
    sources = browser.execute_script("return Array.from(document.images).map(i => i.currentSrc || i.src)")
    assert len(sources) >= 8
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert [r for r in resources if not r.startswith("data:")] == []
    # what the browser itself logged: the page's own document is its only non-data request
    events = [json.loads(entry["message"])["message"] for entry in browser.get_log("performance")]
    requests = [e["params"] for e in events if e["method"] == "Network.requestWillBeSent"]
    by_page = [r["request"]["url"] for r in requests if r.get("documentURL") == page.as_uri()]
    assert page.as_uri() in by_page
    assert [u for u in by_page if u != page.as_uri() and not u.startswith("data:")] == []
    assert [r["request"]["url"] for r in requests if r["request"]["url"].startswith(("http", "ws", "ftp"))] == []


def test_the_chapter_worked_section_renders(opened):
    browser, page, _ = opened
    worked = json.loads((page.parents[2] / "reports/eval/worked.json").read_text())
    heading = next(h for h in browser.find_elements(By.TAG_NAME, "h2") if h.text == "The chapter, worked")
    section = heading.find_element(By.XPATH, "./..")
    text = section.text
    assert "picks each row's probability of its true class, 0.1, 0.5" in text
    assert f"by at most {worked['gradient']['max_abs_difference']:.3g}" in text
    tables = section.find_elements(By.TAG_NAME, "table")
    assert len(tables) == 3 and all(t.is_displayed() for t in tables)
    assert worked["gradient"]["max_abs_difference"] < 1e-10
