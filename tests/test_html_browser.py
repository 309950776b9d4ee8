"""The HTML leaderboard in a real browser: hostile model and operator names show as text, no script
of theirs runs, and clicking a column header sorts the table. Headless Chromium driven by selenium
(Debian packages ``chromium`` and ``chromium-driver``; ``.ci/run`` installs them)."""

from __future__ import annotations

import shutil

import pytest

from robustbench_dc.results import LeaderboardEntry, render_leaderboard

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[browser]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="headless Chromium is not installed "
                                "(apt-get install chromium chromium-driver)")

HOSTILE = [
    "<script>window.__pwned = 'script'</script>",
    '<img src=x onerror="window.__pwned = \'onerror\'">',
    '"><svg onload="window.__pwned = \'svg\'">',
    "<b>bold</b> & <i>markup</i>",
    "javascript:window.__pwned='href'",
]


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield driver
    driver.quit()


def _entries() -> list[LeaderboardEntry]:
    out = []
    for i, name in enumerate(HOSTILE):
        out.append(LeaderboardEntry(name=name, architecture="mnist2d", operator=f"{name} op", dataset="mnist",
                                    threat_model="linf", eps=0.3, clean_accuracy=0.9 - 0.1 * i,
                                    robust_accuracy={"pgd-linf": 0.1 * (i % 3)}))
    return out


def test_hostile_names_show_as_text_and_run_nothing(browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = tmp_path / "leaderboard.html"
    page.write_text(render_leaderboard(_entries(), "html", metric="clean_accuracy"))
    browser.get(page.as_uri())
    assert browser.execute_script("return window.__pwned === undefined")  # no injected script ran
    cells = browser.find_elements(By.CSS_SELECTOR, "table.leaderboard tbody td")
    texts = {c.text for c in cells}
    for name in HOSTILE:
        assert any(name in t for t in texts), name  # the markup is shown literally, as text
    for tag in ("script", "img", "svg", "b", "i"):  # no element came from a name
        assert browser.find_elements(By.CSS_SELECTOR, f"table.leaderboard tbody {tag}") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1  # the page's own sorter only


def test_clicking_a_header_sorts_the_table(browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = tmp_path / "leaderboard.html"
    page.write_text(render_leaderboard(_entries(), "html", metric="clean_accuracy"))
    browser.get(page.as_uri())
    headers = browser.find_elements(By.CSS_SELECTOR, "table.leaderboard thead th")
    names = [h.text for h in headers]
    col = next(i for i, h in enumerate(names) if "clean" in h.lower())

    def column() -> list[float]:
        rows = browser.find_elements(By.CSS_SELECTOR, "table.leaderboard tbody tr")
        return [float(r.find_elements(By.TAG_NAME, "td")[col].get_attribute("data-sort")) for r in rows]

    start = column()
    headers[col].click()
    first = column()
    headers[col].click()
    second = column()
    assert sorted(start) in (first, second) and sorted(start, reverse=True) in (first, second)
    assert first != second
