"""The run page and the index page in a real browser: headless Chromium (Debian's, which test.sh
installs) driven by Playwright, opened from the file system as a user would open them. Skipped,
with the reason, where no Chromium is installed, except under CI, where that is a failure.

    bash test.sh -m browser                      # these tests only
    FEC_SCREENSHOTS=/tmp/shots bash test.sh -m browser   # keep the screenshots
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import fusion_run
from helpers import HOSTILE_FILE, HOSTILE_FOLDERS, HOSTILE_LABELS

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("FEC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# As root, in a sandbox with no network: no setuid sandbox, no GPU, no background connections.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def missing_browser() -> str | None:
    if CHROMIUM is None:
        return "no Chromium (apt-get install chromium, or set FEC_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "no Playwright (pip install playwright)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = missing_browser()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser, tmp_path):
    """Open a file in a fresh page; returns (page, console errors) and saves a full-page screenshot
    when the test ends (in $FEC_SCREENSHOTS when set)."""
    opened = []

    def open_file(path: Path, name: str):
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        opened.append((page, name))
        return page, errors

    yield open_file
    folder = Path(os.environ.get("FEC_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    for page, name in opened:
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
        page.close()


def column(page, table: str, index: int) -> list[str]:
    return page.eval_on_selector_all(f"#{table} tbody tr", f"rows => rows.map(r => r.cells[{index}].textContent.trim())")


def test_the_run_page_renders_its_metrics_and_confusion_matrix_and_sorts(paged_logs, open_page):
    page, errors = open_page(fusion_run(paged_logs) / "index.html", "run_page")
    assert errors == []
    assert page.locator(".card.metric").first.is_visible()
    assert page.locator("#seed-table").is_visible()
    assert page.locator("#confusion-matrix").is_visible()
    assert page.locator("#confusion-matrix tbody tr").count() == 3
    assert page.locator("img[src='curves.png']").evaluate("img => img.naturalWidth") > 0  # the image loaded

    f1 = page.locator("#label-table thead th", has_text="F1")
    f1.click()
    ascending = [float(v) for v in column(page, "label-table", 3)]
    assert ascending == sorted(ascending)
    assert f1.get_attribute("aria-sort") == "ascending"
    f1.click()
    descending = [float(v) for v in column(page, "label-table", 3)]
    assert descending == sorted(ascending, reverse=True)


def test_the_index_page_sorts_filters_and_links_to_run_pages(paged_logs, open_page):
    page, errors = open_page(paged_logs / "index.html", "index_page")
    assert errors == []
    assert page.locator("#runs").is_visible()
    assert page.locator("#runs tbody tr").count() == 2

    page.locator("#filter").fill("tf-idf")
    assert page.locator("#runs tbody tr:visible").count() == 1
    assert page.locator("#shown").text_content() == "1"
    page.locator("#filter").fill("")

    page.locator("#runs thead th", has_text="acc").click()
    page.locator("#runs thead th", has_text="acc").click()  # descending: the best recipe first
    accuracies = [float(v.split("±")[0]) for v in column(page, "runs", 6)]
    assert accuracies == sorted(accuracies, reverse=True)

    # Cells sort as numbers only when they are numbers: dates and "0/5" compare as text.
    values = page.evaluate("""() => ["56.47±0.75", "-1e-3", "2026-12-02 01:10", "0/5", "–"].map(text => {
        const row = document.createElement("tr");
        row.insertCell().textContent = text;
        return cellValue(row, 0);
    })""")
    assert values == [56.47, -0.001, "2026-12-02 01:10", "0/5", "–"]

    page.locator("#runs tbody tr a").first.click()
    page.wait_for_load_state("load")
    assert page.url.endswith("/index.html") and page.locator("#seed-table").is_visible()
    page.go_back()  # the screenshot shows the index
    page.wait_for_load_state("load")
    assert page.locator("#runs").is_visible()


def link_paths(page) -> list[str]:
    """Every link of the page as the browser resolves it: a file path, or the URL itself when it is
    not a file URL (so a `javascript:` link shows as one)."""
    urls = page.eval_on_selector_all("a[href]", "anchors => anchors.map(a => a.href)")
    return [unquote(urlsplit(url).path) if url.startswith("file://") else url for url in urls]


def test_hostile_names_run_no_script_and_every_index_link_opens_its_run_page(hostile_logs, open_page):
    page, errors = open_page(hostile_logs / "index.html", "hostile_index")
    assert all(path.startswith("/") for path in link_paths(page))
    runs = page.locator("#runs tbody a")
    assert sorted(runs.all_text_contents()) == sorted(HOSTILE_FOLDERS)
    for i in range(len(HOSTILE_FOLDERS)):
        run_dir = hostile_logs.resolve() / runs.nth(i).text_content()
        runs.nth(i).click()
        page.wait_for_load_state("load")
        assert unquote(urlsplit(page.url).path) == (run_dir / "index.html").as_posix()
        assert sorted(column(page, "label-table", 0)) == sorted(HOSTILE_LABELS)  # shown as text
        assert page.locator("img[src='x']").count() == 0
        paths = link_paths(page)
        assert all(path.startswith("/") for path in paths)
        assert ((run_dir / HOSTILE_FILE).as_posix() in paths) == (run_dir.name == HOSTILE_FOLDERS[0])
        assert page.evaluate("window.__pwned") is None
        page.go_back()
        page.wait_for_load_state("load")
        assert page.evaluate("window.__pwned") is None
    assert errors == []
