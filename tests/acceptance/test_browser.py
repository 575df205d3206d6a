"""The built book works offline in a real browser: charts, math, navigation, no remote requests.

The checks take any `_build/html` folder from the `built_book` fixture. Until
tests/acceptance/conftest.py provides one for the real book, this module builds a sample
book from the repository's frame (`_config.yml`, `_toc.yml`, `book/`) with throwaway
notebooks whose charts come from svutils.charts.

Needs Debian's Chromium at /usr/bin/chromium and the playwright package. Without them the
browser tests are skipped, except under CI (the CI variable is set), where they fail.
Screenshots go to $SVUTILS_SCREENSHOT_DIR, or to a temporary folder named in the output.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[2]
VEGA_BUNDLE_MIN_BYTES = 100_000


def _load_browser_helpers():
    # Loaded by path, so the helpers import the same way under every pytest import mode.
    name = "svutils_acceptance_browser"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("browser.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


browser = _load_browser_helpers()


def _require_browser() -> None:
    missing = []
    if not browser.CHROMIUM_PATH.exists():
        missing.append(f"{browser.CHROMIUM_PATH} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install playwright)")
    if not missing:
        return
    reason = "browser test needs " + " and ".join(missing)
    if os.environ.get("CI"):
        pytest.fail(reason + "; CI must install them (see .ci/run).")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def screenshot_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("SVUTILS_SCREENSHOT_DIR")
    folder = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    # Output capture would hide the line until a test fails, so print it uncaptured.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nbrowser test screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def report(built_book: Path, screenshot_dir: Path):
    _require_browser()
    return browser.check_book(built_book, screenshot_dir)


def test_book_has_pages(report) -> None:
    assert len(report.pages) >= 2, [page.path for page in report.pages]


def test_charts_render_on_every_page(report) -> None:
    for page in report.pages:
        assert page.rendered_charts == page.charts, f"{page.path}: {page.rendered_charts} of {page.charts} charts drawn"


def test_charts_render_from_file_urls(report) -> None:
    assert report.file_url_charts, "no page with charts was opened from disk"
    for path, charts, rendered in report.file_url_charts:
        assert rendered == charts, f"{path} opened from disk: {rendered} of {charts} charts drawn"


def test_book_contains_charts(report) -> None:
    assert sum(page.charts for page in report.pages) > 0


def test_math_typesets_offline(report) -> None:
    for page in report.pages:
        assert page.typeset_math == page.math, f"{page.path}: {page.typeset_math} of {page.math} formulas typeset"


def test_console_has_no_errors(report) -> None:
    for page in report.pages:
        assert page.console_errors == [], f"{page.path}: {page.console_errors}"


def test_no_request_leaves_origin(report) -> None:
    assert report.blocked_requests == []


def test_next_links_walk_whole_book(report) -> None:
    assert report.next_walk == report.sidebar


def test_walk_starts_at_root_page(report) -> None:
    assert report.next_walk[0] == report.sidebar[0]


def test_chart_tooltip_shows_values(report) -> None:
    assert report.tooltip_text, "hovering a chart point showed no tooltip"


def test_screenshots_written(report) -> None:
    for page in report.pages:
        assert page.screenshot.is_file(), page.screenshot


def test_html_loads_nothing_remote(built_book: Path) -> None:
    assert browser.find_remote_references(built_book) == []


def test_html_has_no_chart_cdn(built_book: Path) -> None:
    pattern = re.compile(r"(?:cdn\.jsdelivr\.net|unpkg\.com|cdnjs\.cloudflare\.com|esm\.sh|cdn\.skypack\.dev)/[^\"'\s]*vega")
    hits = []
    for path in sorted(built_book.rglob("*.html")):
        hits += [f"{path.relative_to(built_book)}: {match}" for match in pattern.findall(path.read_text(encoding="utf-8"))]
    assert hits == []


def test_vega_bundle_in_build(built_book: Path) -> None:
    bundle = built_book / "_static" / "svutils-vega.js"
    assert bundle.is_file()
    assert bundle.stat().st_size > VEGA_BUNDLE_MIN_BYTES


def test_launch_buttons_open_source_notebooks(built_book: Path) -> None:
    pages = sorted((built_book / "book" / "_generated").glob("*.html"))
    assert pages, "no generated notebook pages in the build"
    for page in pages:
        text = page.read_text(encoding="utf-8")
        links = re.findall(r'href="(https://(?:colab\.research\.google\.com|mybinder\.org)[^"]+)"', text)
        assert links, f"{page.name}: no Colab or Binder launch link"
        for link in links:
            assert f"notebooks/{page.stem}.ipynb" in link, link
