"""The published site, opened in a real browser (headless Chromium).

The site built by the session's `build` fixture (tests/conftest.py; the same build that
tests/test_book.py checks) is served on 127.0.0.1 and every page is opened in Chromium. For each
page of the table of contents, the DOM as the browser left it must show:

* a non-empty <title> and one <h1> in <main>, whose text is in the title;
* no error output from execution (tracebacks, stderr) outside cells tagged `raises-exception`,
  no docutils error messages and no MyST syntax left unrendered (a broken directive or role
  shows up as literal ```{...} or {role}` text);
* every local link, image, script and stylesheet resolving to a file of the site (anchors to an
  existing id), and every request the browser made to the site answered without an error;
* images that decode; on chapter pages, at least one figure produced by the notebook;
* Colab links of the form https://colab.research.google.com/github/<owner>/<repo>/blob/<branch>/
  notebooks/NN_....ipynb, derived from `repository` in _config.yml (course_utils.colab); each
  chapter links to its own notebook;
* no uncaught JavaScript error.

Screenshots of a few pages go to _build/test-artifacts/screenshots/ (paths printed).

Without a Chromium binary the module is skipped with a visible reason (pytest runs with -rfEs).
To check an already built site without building: COURSE_SITE_HTML=_build/html pytest <this file>.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit
from urllib.request import urlopen

import pytest
import yaml

from course_utils import colab

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
if CHROMIUM is None:
    pytest.skip(
        "NO se ha comprobado el sitio en un navegador: no hay Chromium en esta máquina (se buscó "
        f"{', '.join(CHROMIUM_NAMES)}). Instálalo con «apt-get install chromium» (lo hace .ci/run).",
        allow_module_level=True,
    )

ARTIFACTS = ROOT / "_build" / "test-artifacts" / "screenshots"
SCREENSHOTS = {  # artifact name -> page
    "inicio": "book/intro.html",
    "capitulo": "notebooks/01_que_es_llama3.html",
    "glosario": "book/glosario.html",
}
WINDOW = (1280, 2000)  # much taller screenshots come out black

# sphinx-thebe 0.3.1 (installed with Jupyter Book 1.0.4) writes its inline configuration script,
# `const THEBE_JS_URL = ...`, twice into every page, and the second copy throws on redeclaration.
# The course does not use thebe (no live code cells), so the error is harmless.
KNOWN_JS_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",)

COLAB_RE = re.compile(r"^https://colab\.research\.google\.com/github/([^/]+)/([^/]+)/blob/([^/]+)/"
                      r"notebooks/(\d\d_[a-z0-9_]+\.ipynb)$")
UNRENDERED_MYST = re.compile(r"```\{|:::\{|\{(?:doc|term|ref|numref|eq|download|glue)\}`")
ERROR_OUTPUTS = {"traceback", "error", "stderr"}


def toc_pages() -> list[str]:
    """Every page of the table of contents, as paths of the built site, plus Sphinx's own."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))

    def files(node):
        if isinstance(node, dict):
            if "file" in node:
                yield node["file"]
            for value in node.values():
                yield from files(value)
        elif isinstance(node, list):
            for value in node:
                yield from files(value)

    entries = [toc["root"], *files(toc)]
    return [f"{entry}.html" for entry in dict.fromkeys(entries)] + ["genindex.html", "search.html"]


PAGES = toc_pages()


def is_chapter(page: str) -> bool:
    return re.fullmatch(r"notebooks/\d\d_[a-z0-9_]+\.html", page) is not None


# --- serving the site --------------------------------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    failures: list[str]  # set per server

    def log_message(self, format, *args):
        pass

    def log_request(self, code="-", size="-"):
        # HTTPStatus is an int. Browsers ask for /favicon.ico on their own; the site has none.
        if isinstance(code, int) and code >= 400 and self.path != "/favicon.ico":
            self.failures.append(f"{int(code)} {self.path}")


@dataclass
class Site:
    html: Path
    base: str
    failed_requests: list[str] = field(default_factory=list)

    def url(self, page: str) -> str:
        return urljoin(self.base, page)


@pytest.fixture(scope="module")
def site(build):
    """The built site served on a free port of 127.0.0.1; the server always shuts down."""
    assert (build.html / "index.html").is_file(), build.log[-5000:]
    failures: list[str] = []
    handler = type("Handler", (_Handler,), {"failures": failures})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(build.html)))
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    try:
        yield Site(html=build.html, base=f"http://127.0.0.1:{server.server_address[1]}/",
                   failed_requests=failures)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- the browser ---------------------------------------------------------------------------------


def chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
            check=False, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=timeout,
        )
    assert proc.returncode == 0, f"chromium {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc


def js_errors(stderr: str) -> list[str]:
    """Uncaught JavaScript errors from Chromium's console log, less the known harmless ones."""
    errors = [line for line in stderr.splitlines() if ":CONSOLE" in line and "Uncaught" in line]
    return [line for line in errors if not any(known in line for known in KNOWN_JS_ERRORS)]


@dataclass
class Rendered:
    page: str
    soup: object          # BeautifulSoup of the DOM after the browser loaded the page
    js_errors: list[str]
    failed_requests: list[str]


@pytest.fixture(scope="module")
def render(site):
    """render(page) -> the page as Chromium rendered it (one browser run per page, cached)."""
    from bs4 import BeautifulSoup

    cache: dict[str, Rendered] = {}

    def get(page: str) -> Rendered:
        if page not in cache:
            site.failed_requests.clear()
            proc = chromium("--dump-dom", site.url(page))
            cache[page] = Rendered(page, BeautifulSoup(proc.stdout, "html.parser"),
                                   js_errors(proc.stderr), list(site.failed_requests))
        return cache[page]

    return get


# --- helpers ---------------------------------------------------------------------------------------


def text(element) -> str:
    return " ".join(element.get_text().split())


def local_target(page: str, ref: str) -> tuple[str, str] | None:
    """(path in the site, fragment) for a site-relative reference; None for external ones."""
    ref = ref.strip()
    parts = urlsplit(ref)
    if parts.scheme or ref.startswith("//") or not ref:
        return None
    path = PurePosixPath(page).parent.joinpath(unquote(parts.path)) if parts.path else PurePosixPath(page)
    resolved: list[str] = []
    for part in path.parts:
        if part == "..":
            assert resolved, f"{page}: {ref} points outside the site"
            resolved.pop()
        elif part != ".":
            resolved.append(part)
    target = "/".join(resolved)
    if ref.split("#")[0].split("?")[0].endswith("/"):
        target += "/index.html"
    return target, parts.fragment


@functools.cache
def ids_in(file: Path) -> frozenset[str]:
    return frozenset(re.findall(r'\bid="([^"]+)"', file.read_text(encoding="utf-8", errors="replace")))


# --- the tests -----------------------------------------------------------------------------------


def test_every_html_page_of_the_site_is_checked(site):
    built = {p.relative_to(site.html).as_posix() for p in site.html.rglob("*.html")
             if p.relative_to(site.html).parts[0] not in {"_static", "_sources", "_images"}}
    assert built - {"index.html"} == set(PAGES), "pages built but not in _toc.yml, or missing"


def test_home_redirects_to_the_introduction(site):
    index = (site.html / "index.html").read_text(encoding="utf-8")
    match = re.search(r'http-equiv="Refresh" content="0; url=([^"]+)"', index)
    assert match, index
    assert match.group(1) == PAGES[0] and (site.html / match.group(1)).is_file()


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_title_heading_and_no_errors(render, page):
    rendered = render(page)
    soup = rendered.soup
    title = text(soup.title) if soup.title else ""
    assert title, f"{page}: empty <title>"
    main = soup.select_one("main")
    assert main, f"{page}: no <main>"
    headings = [h1 for h1 in main.find_all("h1") if not h1.find_parent(class_="onlyprint")]
    assert len(headings) == 1, f"{page}: expected one <h1> in <main>, found {len(headings)}"
    for link in headings[0].select("a.headerlink"):
        link.extract()
    heading = text(headings[0])
    assert heading and heading in title, f"{page}: <h1> {heading!r} vs <title> {title!r}"

    problems = []
    for output in soup.select("div.output"):
        kinds = ERROR_OUTPUTS & set(output.get("class", []))
        cell = output.find_parent("div", class_="cell")
        if kinds and not (cell and "tag_raises-exception" in cell.get("class", [])):
            problems.append(f"{'/'.join(sorted(kinds))} output: {text(output)[:300]}")
    for message in soup.select(".system-message, .problematic"):
        problems.append(f"docutils error: {text(message)[:300]}")
    for string in main.find_all(string=UNRENDERED_MYST):
        if not string.find_parent(["pre", "code", "script", "style"]):
            problems.append(f"unrendered MyST: {' '.join(string.split())[:200]}")
    problems += [f"JavaScript: {line}" for line in rendered.js_errors]
    problems += [f"request failed: {failure}" for failure in rendered.failed_requests]
    assert not problems, f"{page}:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_local_links_and_assets_resolve(render, site, page):
    soup = render(page).soup
    broken = []
    for tag, attr in (("a", "href"), ("img", "src"), ("link", "href"), ("script", "src"),
                      ("source", "src"), ("iframe", "src")):
        for element in soup.find_all(tag, attrs={attr: True}):
            ref = element[attr]
            target = local_target(page, ref)
            if target is None:
                continue
            path, fragment = target
            file = site.html / path
            if not file.is_file():
                broken.append(f"<{tag} {attr}={ref!r}>: no file {path}")
            elif fragment and file.suffix == ".html" and path != page and fragment not in ids_in(file):
                broken.append(f"<{tag} {attr}={ref!r}>: no id {fragment!r} in {path}")
            elif fragment and path == page and not soup.find(id=fragment):
                broken.append(f"<{tag} {attr}={ref!r}>: no id {fragment!r} in this page")
    assert not broken, f"{page}:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES)
def test_images_load_and_chapters_show_their_figures(render, site, page):
    from PIL import Image

    soup = render(page).soup
    figures, problems = [], []
    for img in soup.find_all("img"):
        src = (img.get("src") or "").strip()
        if not src:
            problems.append(f"<img> without src: {img}")
            continue
        if src.startswith("data:"):
            figures.append(src[:30])
            continue
        if local_target(page, src) is None:
            continue  # external (the Colab badge): not served by the site
        with urlopen(urljoin(site.url(page), src), timeout=30) as response:
            kind = response.headers.get_content_type()
            body = response.read()
        if not kind.startswith("image/"):
            problems.append(f"{src}: served as {kind}")
        elif kind != "image/svg+xml":
            with Image.open(io.BytesIO(body)) as image:
                image.load()
                if min(image.size) == 0:
                    problems.append(f"{src}: empty image {image.size}")
        if "_images/" in src:
            figures.append(src)
    assert not problems, f"{page}:\n" + "\n".join(problems)
    if is_chapter(page):
        assert figures, f"{page}: no figure from the notebook's execution"


@pytest.mark.parametrize("page", PAGES)
def test_colab_links_are_well_formed(render, page):
    url, branch = colab.repository()
    owner, repo = url.removeprefix("https://github.com/").split("/")
    links = [a["href"] for a in render(page).soup.find_all("a", href=True)
             if urlsplit(a["href"]).hostname == "colab.research.google.com"]
    for href in links:
        match = COLAB_RE.match(href)
        assert match, f"{page}: malformed Colab link {href}"
        assert match.groups()[:3] == (owner, repo, branch), f"{page}: {href} is not {owner}/{repo}@{branch}"
        assert (ROOT / "notebooks" / match.group(4)).is_file(), f"{page}: {href} names no notebook"
    if is_chapter(page):
        notebook = PurePosixPath(page).with_suffix(".ipynb").name
        assert links, f"{page}: no Colab link (badge or launch button)"
        assert set(links) == {colab.colab_url(notebook)}, f"{page}: {sorted(set(links))}"


def test_screenshots(site, capsys):
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    saved = []
    for name, page in SCREENSHOTS.items():
        path = ARTIFACTS / f"{name}.png"
        path.unlink(missing_ok=True)
        chromium(f"--screenshot={path}", f"--window-size={WINDOW[0]},{WINDOW[1]}", site.url(page))
        assert path.is_file(), f"no screenshot of {page}"
        with Image.open(path) as image:
            assert image.size == WINDOW, image.size
            colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 16, f"{page}: the screenshot is blank ({path})"
        saved.append(f"{page} -> {path}")
    with capsys.disabled():
        print("\nCapturas del sitio:\n  " + "\n  ".join(saved))


def test_math_renders_from_the_site_itself(site):
    """Formulas are typeset by the MathJax copy inside the site (sphinx-mathjax-offline), with no
    CDN: the site works offline. Checked on every page whose HTML has math."""
    from bs4 import BeautifulSoup

    pages = [p for p in toc_pages()
             if BeautifulSoup((site.html / p).read_text(encoding="utf-8"), "html.parser")
             .select(".math")]
    assert pages, "no page with math: the check would prove nothing"
    for page in pages:
        html = (site.html / page).read_text(encoding="utf-8")
        assert "cdn.jsdelivr.net/npm/mathjax" not in html, page
        assert "_static/mathjax/tex-chtml.js" in html, page
        proc = chromium("--virtual-time-budget=10000", "--dump-dom", site.url(page))
        soup = BeautifulSoup(proc.stdout, "html.parser")
        typeset = soup.select("mjx-container")
        assert len(typeset) >= len(soup.select(".math")) > 0, (
            f"{page}: {len(typeset)} fórmulas compuestas por MathJax de {len(soup.select('.math'))}")
