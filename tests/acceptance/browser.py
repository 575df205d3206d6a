"""Helpers that check a built Jupyter Book in headless Chromium with no network.

`check_book(html_dir, screenshot_dir)` serves a `_build/html` folder on 127.0.0.1 and
opens every page with Playwright in Debian's Chromium. It aborts and records every request
that leaves that origin. The returned `BookReport` lists the charts drawn, the math
typeset and the console errors per page, a walk along the "next" links, a tooltip probe
and full-page screenshots.
`find_remote_references(html_dir)` is the static counterpart: it lists scripts, styles and
imports that the HTML would load from another host. `build_sample_book` builds a small
book from the repository's frame (`_config.yml`, `_toc.yml`, `book/`) with throwaway
notebooks in place of the generated ones, for testing without a full run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

CHROMIUM_PATH = Path("/usr/bin/chromium")
# Flags that keep Chromium from contacting Google services on its own: component updates,
# sync and background networking would show up as blocked requests.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Chart containers: svutils' offline renderer, Altair's default renderer (which would need
# a CDN) and any element vega-embed has already taken over.
CHART_SELECTOR = '.svutils-chart, div[id^="altair-viz"], .vega-embed'
MATH_SELECTOR = "span.math, div.math"
NEXT_LINK_SELECTOR = "a.right-next"
SIDEBAR_LINK_SELECTOR = "nav.bd-docs-nav a.reference.internal"
PAGE_TIMEOUT_MS = 30_000
BUILD_TIMEOUT_S = 600

# Resources a page loads, as opposed to links a reader may click.
_REMOTE_RESOURCE_PATTERNS = [
    re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']((?:https?:)?//[^\"']+)", re.IGNORECASE),
    re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']((?:https?:)?//[^\"']+)", re.IGNORECASE),
    re.compile(r"<(?:img|iframe|source|embed)\b[^>]*\bsrc\s*=\s*[\"']((?:https?:)?//[^\"']+)", re.IGNORECASE),
    re.compile(r"\bimport\s*\(\s*[\"']((?:https?:)?//[^\"']+)", re.IGNORECASE),
    re.compile(r"@import\s+(?:url\()?\s*[\"']?((?:https?:)?//[^\"')\s]+)", re.IGNORECASE),
]
# The sample book's throwaway notebooks, one per generated page of _toc.yml.
SAMPLE_NOTEBOOKS = {
    "svd_primer": "SVD primer",
    "task_complexity": "Task complexity",
    "training_duration": "Training duration",
    "matrix_specific": "Matrix-specific effects",
    "early_ffn": "Early FFN layers",
    "why": "Why small singular values matter",
}


@dataclasses.dataclass
class RemoteReference:
    """A resource that an HTML file would load from another host."""

    page: str
    url: str


@dataclasses.dataclass
class PageReport:
    """What one page showed in the browser."""

    path: str
    title: str
    charts: int
    rendered_charts: int
    math: int
    typeset_math: int
    console_errors: list[str]
    screenshot: Path


@dataclasses.dataclass
class BookReport:
    """The result of `check_book`: per-page reports and book-wide observations."""

    pages: list[PageReport]
    file_url_charts: list[tuple[str, int, int]]
    """`(page, charts, rendered charts)` of each page with charts, opened as a file:// URL."""
    blocked_requests: list[str]
    sidebar: list[tuple[str, str]]
    next_walk: list[tuple[str, str]]
    tooltip_text: str | None
    screenshot_dir: Path


_REDIRECT_PATTERN = re.compile(r"<meta\s+http-equiv\s*=\s*[\"']refresh", re.IGNORECASE)


def html_pages(html_dir: Path) -> list[str]:
    """Return the book's HTML pages relative to `html_dir`.

    Leaves out `_static`, `_sources` and other folders starting with "_", and redirect
    stubs such as the `index.html` that Jupyter Book writes to point at the root page.
    """
    pages = []
    for path in sorted(html_dir.rglob("*.html")):
        relative = path.relative_to(html_dir)
        if relative.parts[0].startswith("_"):
            continue
        if _REDIRECT_PATTERN.search(path.read_text(encoding="utf-8", errors="replace")[:2000]):
            continue
        pages.append(relative.as_posix())
    return pages


def find_remote_references(html_dir: Path) -> list[RemoteReference]:
    """List every script, stylesheet, image, frame or import that a page loads from another host."""
    found = []
    for path in sorted(Path(html_dir).rglob("*.html")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for pattern in _REMOTE_RESOURCE_PATTERNS:
            for match in pattern.finditer(text):
                found.append(RemoteReference(page=path.relative_to(html_dir).as_posix(), url=match.group(1)))
    return found


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 at a free port and yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-server", daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _page_path(url: str) -> str:
    path = unquote(urlsplit(url).path).lstrip("/")
    return path or "index.html"


def _wait_for_rendering(page: Any) -> None:
    page.wait_for_load_state("load")
    page.wait_for_function(
        f"""() => Array.from(document.querySelectorAll('{CHART_SELECTOR}'))
                .every(element => element.querySelector('svg, canvas'))""",
        timeout=PAGE_TIMEOUT_MS,
    )
    # MathJax 3 exposes a promise that resolves once the first typesetting is done.
    page.wait_for_function(
        """() => !document.querySelector('span.math, div.math')
                || (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise
                    && document.querySelector('mjx-container'))""",
        timeout=PAGE_TIMEOUT_MS,
    )


def _count(page: Any, selector: str, child: str) -> tuple[int, int]:
    return page.evaluate(
        """([selector, child]) => {
            const elements = Array.from(document.querySelectorAll(selector));
            return [elements.length, elements.filter(element => element.querySelector(child)).length];
        }""",
        [selector, child],
    )


def _probe_tooltip(page: Any) -> str | None:
    """Hover the first chart symbol and return the tooltip text, or None if no symbol exists."""
    symbol = page.locator(".svutils-chart svg .mark-symbol path").first
    if symbol.count() == 0:
        return None
    symbol.scroll_into_view_if_needed()
    symbol.hover(force=True)
    tooltip = page.locator("#vg-tooltip-element.visible")
    tooltip.wait_for(state="visible", timeout=PAGE_TIMEOUT_MS)
    return tooltip.inner_text()


def _screenshot_name(relative: str) -> str:
    return relative.replace("/", "__").removesuffix(".html") + ".png"


def check_book(html_dir: Path, screenshot_dir: Path, *, chromium_path: Path = CHROMIUM_PATH) -> BookReport:
    """Open every page of the built book in Chromium with all other hosts blocked.

    Requests to any origin but the local server are aborted and listed in
    `blocked_requests`. Each page is waited on until every chart container contains an
    `svg` or `canvas` and MathJax has typeset. After PAGE_TIMEOUT_MS a Playwright
    TimeoutError propagates. Screenshots go to `screenshot_dir`.
    """
    from playwright.sync_api import sync_playwright

    html_dir = Path(html_dir)
    screenshot_dir = Path(screenshot_dir)
    screenshot_dir.mkdir(parents=True, exist_ok=True)
    blocked: list[str] = []
    pages: list[PageReport] = []

    with serve_directory(html_dir) as origin, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")

            # The book itself may load from the server or, in the file:// pass, from disk.
            allowed_prefixes = (origin + "/", html_dir.resolve().as_uri() + "/")

            def route(route_request: Any) -> None:
                url = route_request.request.url
                if url.startswith(allowed_prefixes) or url == origin:
                    route_request.continue_()
                else:
                    blocked.append(url)
                    route_request.abort()

            context.route("**/*", route)
            page = context.new_page()
            console_errors: list[str] = []
            def record_console(message: Any) -> None:
                if message.type == "error":
                    console_errors.append(message.text)

            page.on("console", record_console)
            page.on("pageerror", lambda error: console_errors.append(f"uncaught: {error}"))

            tooltip_text = None
            for relative in html_pages(html_dir):
                console_errors.clear()
                page.goto(f"{origin}/{relative}", wait_until="load", timeout=PAGE_TIMEOUT_MS)
                _wait_for_rendering(page)
                charts, rendered = _count(page, CHART_SELECTOR, "svg, canvas")
                math, typeset = _count(page, MATH_SELECTOR, "mjx-container")
                if tooltip_text is None and rendered:
                    tooltip_text = _probe_tooltip(page)
                screenshot = screenshot_dir / _screenshot_name(relative)
                page.screenshot(path=str(screenshot), full_page=True)
                pages.append(
                    PageReport(
                        path=_page_path(page.url),
                        title=page.title(),
                        charts=charts,
                        rendered_charts=rendered,
                        math=math,
                        typeset_math=typeset,
                        console_errors=list(console_errors),
                        screenshot=screenshot,
                    )
                )

            sidebar, walk = _walk_next_links(page, origin)
            chart_pages = [item for item in pages if item.charts]
            file_url_charts = _count_charts_from_files(page, html_dir, chart_pages)
        finally:
            browser.close()

    return BookReport(
        pages=pages,
        file_url_charts=file_url_charts,
        blocked_requests=blocked,
        sidebar=sidebar,
        next_walk=walk,
        tooltip_text=tooltip_text,
        screenshot_dir=screenshot_dir,
    )


def _count_charts_from_files(
    page: Any, html_dir: Path, chart_pages: list[PageReport]
) -> list[tuple[str, int, int]]:
    """Open each chart page from disk, as a reader of a copied book folder would.

    Browsers apply stricter rules to file:// pages. Chromium, for example, loads no module
    scripts there, so charts that render over HTTP can still stay blank from disk.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    counts = []
    for report in chart_pages:
        page.goto((html_dir / report.path).resolve().as_uri(), wait_until="load", timeout=PAGE_TIMEOUT_MS)
        try:
            _wait_for_rendering(page)
        except PlaywrightTimeoutError:
            pass  # the counts below show which charts stayed blank
        charts, rendered = _count(page, CHART_SELECTOR, "svg, canvas")
        counts.append((report.path, charts, rendered))
    return counts


def _walk_next_links(page: Any, origin: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Read the sidebar of the root page, then click "next" from there to the last page.

    Returns `(sidebar, walk)` as lists of `(page path, title)`: the sidebar entries with
    their link texts, and each visited page with its `<h1>` text.
    """
    # index.html only redirects to the root page, so wait until the sidebar appears.
    page.goto(f"{origin}/index.html", wait_until="load", timeout=PAGE_TIMEOUT_MS)
    page.locator(SIDEBAR_LINK_SELECTOR).first.wait_for(timeout=PAGE_TIMEOUT_MS)
    sidebar = []
    for link in page.locator(SIDEBAR_LINK_SELECTOR).all():
        absolute = link.evaluate("element => element.href")
        sidebar.append((_page_path(absolute), " ".join(link.inner_text().split())))

    walk = []
    seen = set()
    while True:
        path = _page_path(page.url)
        if path in seen:
            raise AssertionError(f"The next links loop back to {path}.")
        seen.add(path)
        heading = page.locator("main h1").first
        walk.append((path, " ".join(heading.inner_text().split()).rstrip("#").strip()))
        next_link = page.locator(NEXT_LINK_SELECTOR)
        if next_link.count() == 0:
            break
        next_link.first.click()
        page.wait_for_load_state("load")
    return sidebar, walk


# ---------------------------------------------------------------------------------------
# Sample book
# ---------------------------------------------------------------------------------------


def _sample_chart_outputs(task: str) -> list[dict[str, Any]]:
    """Return display_data outputs with two real charts from svutils.charts, seeded by `task`."""
    import numpy as np
    import pandas as pd

    from svutils import charts

    rng = np.random.default_rng(zlib.crc32(task.encode("utf-8")))
    rows = []
    for matrix in ("attn", "ffn"):
        for band in range(10):
            change = float(rng.normal(0.0, 0.02))
            rows.append(
                {
                    "matrix": matrix,
                    "band": band,
                    "change": change,
                    "ci_low": change - 0.01,
                    "ci_high": change + 0.01,
                    "collapsed": band == 9 and matrix == "ffn",
                }
            )
    effects = pd.DataFrame(rows)
    values = np.sort(rng.gamma(2.0, 1.0, size=96))[::-1] + 0.05
    spectrum = pd.DataFrame({"index": np.arange(values.size), "singular_value": values})

    edges = {"MP upper edge": 4.0, "MP lower edge": 0.2}
    outputs = []
    for chart in (
        charts.band_effect_chart(effects, color="matrix", title=f"Sample band effects: {task}"),
        charts.spectrum_chart(spectrum, edges=edges, title="Sample spectrum"),
    ):
        bundle = charts.offline_renderer(chart.to_dict())
        outputs.append({"output_type": "display_data", "metadata": {}, "data": bundle})
    return outputs


def _write_sample_notebook(path: Path, name: str, title: str) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    code = nbformat.v4.new_code_cell(
        "from svutils import charts\ncharts.enable_offline()\n# sample charts drawn with svutils.charts",
        execution_count=1,
    )
    code.outputs = [nbformat.from_dict(output) for output in _sample_chart_outputs(name)]
    notebook.cells = [
        nbformat.v4.new_markdown_cell(
            f"# {title}\n\nA throwaway page of the sample book. Removing band $b$ gives "
            "$W' = W - U_b \\Sigma_b V_b^\\top$."
        ),
        code,
    ]
    nbformat.validate(notebook)
    path.write_text(nbformat.writes(notebook), encoding="utf-8")


def build_sample_book(repo_root: Path, destination: Path, *, strict: bool = True) -> Path:
    """Build a book from the repository's frame and throwaway notebooks, and return its HTML folder.

    Copies `_config.yml`, `_toc.yml` and `book/` (minus `book/_generated`) to
    `destination`, writes one sample notebook per generated page plus `findings.md` and
    `run_info.md`, and runs `jupyter-book build`. With `strict`, any Sphinx warning fails
    the build. Raises RuntimeError with the build log when the build fails.
    """
    repo_root = Path(repo_root).resolve()
    destination = Path(destination).resolve()
    destination.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(repo_root / name, destination / name)
    skip_generated = shutil.ignore_patterns("_generated")
    shutil.copytree(repo_root / "book", destination / "book", ignore=skip_generated, dirs_exist_ok=True)

    generated = destination / "book" / "_generated"
    generated.mkdir(parents=True, exist_ok=True)
    for name, title in SAMPLE_NOTEBOOKS.items():
        _write_sample_notebook(generated / f"{name}.ipynb", name, title)
    (generated / "findings.md").write_text(
        "# Sample findings\n\nThe sample book has no results; this text stands in for the summary.\n",
        encoding="utf-8",
    )
    (generated / "run_info.md").write_text(
        "# Sample run record\n\n| item | value |\n|---|---|\n| profile | sample |\n",
        encoding="utf-8",
    )

    jupyter_book = "from jupyter_book.cli.main import main; main()"
    command = [sys.executable, "-c", jupyter_book, "build", str(destination)]
    if strict:
        command += ["--warningiserror", "--keep-going"]
    # The book's local extension imports svutils.charts from the repository.
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), environment.get("PYTHONPATH")]))
    result = subprocess.run(
        command, cwd=destination, env=environment, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"jupyter-book build failed with exit code {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return destination / "_build" / "html"
