"""The offline docs site, built by `tools/site.py` and read in headless Chromium as a reader would.

Every page listed in `_quarto.yml` must load without console errors, show its title, show the
figures and API entries its notebook has, link only to pages and anchors that exist, and show no
raw notebook syntax. A screenshot of the home page is kept in test-artifacts/home.png.

Set JUPYTER_HEALTH_SITE_ALLOW_MISSING=1 only while notebooks are still being written: the pages
whose notebook does not exist yet are then left out instead of failing the build
(JUPYTER_HEALTH_SITE_CONFIG=FILE likewise takes the navigation from a trimmed copy of _quarto.yml).
"""
from __future__ import annotations

import ast
import functools
import importlib.util
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest
from bs4 import BeautifulSoup

from conftest import NBS, ROOT

# tools/site.py, loaded by path: `import site` would give the standard library's module.
_spec = importlib.util.spec_from_file_location("docs_site", ROOT / "tools" / "site.py")
docs_site = sys.modules["docs_site"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(docs_site)
page_name, read_nav = docs_site.page_name, docs_site.read_nav

CHROMIUM = os.environ.get("JUPYTER_HEALTH_TEST_CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ALLOW_MISSING = os.environ.get("JUPYTER_HEALTH_SITE_ALLOW_MISSING") == "1"
ARTIFACTS = ROOT / "test-artifacts"
CONFIG = Path(os.environ.get("JUPYTER_HEALTH_SITE_CONFIG") or ROOT / "_quarto.yml")
SITE_TITLE, NAV = read_nav(CONFIG)
PAGES = [n for n in NAV.notebooks if not ALLOW_MISSING or (NBS / n).exists()]
# Only in those work-in-progress runs: links to the pages left out are not followed.
LEFT_OUT = ({page_name(n) for n in read_nav(ROOT / "_quarto.yml")[1].notebooks if n not in PAGES}
            if ALLOW_MISSING or "JUPYTER_HEALTH_SITE_CONFIG" in os.environ else set())


def _cells(nb_name: str) -> list[dict]:
    return json.loads((NBS / nb_name).read_text(encoding="utf-8"))["cells"]


def _src(c: dict) -> str: return "".join(c["source"])


def expected(nb_name: str) -> dict:
    "What the page must show, read from the notebook itself: title, figures, API names."
    cells = _cells(nb_name)
    title = re.search(r"^#\s+(.+?)\s*$", _src(cells[0]), re.M).group(1)
    figures = any(k.startswith("image/") for c in cells if c["cell_type"] == "code"
                  for o in c.get("outputs", []) for k in o.get("data", {}))
    figures |= any(re.search(r"!\[[^\]]*\]\(", _src(c)) for c in cells
                   if c["cell_type"] == "markdown")
    api = []
    for c in cells:
        if c["cell_type"] != "code": continue
        s = _src(c)
        dirs = set(re.findall(r"^#\|\s*([\w-]+)", s, re.M))
        api += re.findall(r"^show_doc\(\s*([\w.]+)", s, re.M)
        if dirs & {"export", "exports"} and "hide" not in dirs:
            tree = ast.parse("\n".join(ln for ln in s.splitlines() if not ln.startswith("%")))
            api += [d.name for d in tree.body
                    if isinstance(d, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                    and not d.name.startswith("_") and not d.decorator_list]
    return {"title": title, "figures": figures, "api": list(dict.fromkeys(api))}


@pytest.fixture(scope="module")
def figures_after_nbdev(site) -> dict[str, int]:
    "Figures each notebook has once nbdev has run the cells it runs for the docs."
    res = {}
    for name in PAGES:
        nb = json.loads((site.parent / "proc" / name).read_text(encoding="utf-8"))
        res[name] = sum(k.startswith("image/") for c in nb["cells"] if c["cell_type"] == "code"
                        for o in c.get("outputs", []) for k in o.get("data", {}))
    return res


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    "The site built by the documented command into a scratch folder."
    out = tmp_path_factory.mktemp("docs") / "site"
    cmd = [sys.executable, str(ROOT / "tools" / "site.py"), "--out", str(out),
           "--config", str(CONFIG), "--proc-dir", str(out.parent / "proc")]
    if ALLOW_MISSING: cmd.append("--allow-missing")
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    i = res.stderr.find("site build failed")
    err = res.stderr[i:] if i >= 0 else res.stderr[-6000:]
    assert res.returncode == 0, f"tools/site.py failed:\n{res.stdout}\n{err}"
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


@pytest.fixture(scope="module")
def server(site):
    "The built folder served over HTTP on a free local port, as a reader's browser would get it."
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(_Quiet, directory=str(site)))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown(); httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    "Debian's headless Chromium driven by Playwright (never a downloaded browser)."
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (install Debian's `chromium` or set "
                    "JUPYTER_HEALTH_TEST_CHROMIUM)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@functools.lru_cache(maxsize=None)
def _fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e: return e.code, ""


def _ids(html: str) -> set[str]:
    return {t["id"] for t in BeautifulSoup(html, "html.parser").find_all(id=True)}


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text} ({m.location.get('url')})")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    resp = page.goto(url, wait_until="load")
    assert resp is not None and resp.status == 200, f"{url} answered {resp and resp.status}"
    page.wait_for_load_state("networkidle")
    return page, errors


@pytest.mark.browser
def test_home_page_screenshot(browser, server):
    "The home page renders with the site's navigation; its screenshot is kept for review."
    page, errors = _open(browser, server + "index.html")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    nav = page.locator("nav.site-sidebar a").all_inner_texts()
    page.close()
    assert not errors, errors
    assert len(nav) == len(PAGES), f"sidebar shows {nav}, _quarto.yml lists {PAGES}"


@pytest.mark.browser
@pytest.mark.parametrize("nb_name", PAGES, ids=[Path(n).stem for n in PAGES])
def test_page(browser, server, figures_after_nbdev, nb_name):
    "One page of the navigation, checked the way a reader would see it."
    exp = expected(nb_name)
    url = server + page_name(nb_name)
    page, errors = _open(browser, url)
    try:
        assert not errors, f"{nb_name}: {errors}"
        assert page.title() == exp["title"], f"{nb_name}: <title> is {page.title()!r}"
        h1 = page.locator("h1.page-title")
        assert h1.is_visible() and h1.inner_text().strip() == exp["title"]

        text = page.inner_text("body")
        raw = [ln for ln in text.splitlines() if ln.strip().startswith("#|")]
        assert not raw, f"{nb_name}: directive lines show through: {raw[:3]}"
        assert ":::" not in text, f"{nb_name}: an unprocessed ::: fence shows through"
        assert "show_doc(" not in text, f"{nb_name}: a literal show_doc( call shows through"

        imgs = page.eval_on_selector_all(
            "main img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
        assert all(imgs), f"{nb_name}: {imgs.count(False)} image(s) do not render"
        if exp["figures"] or figures_after_nbdev.get(nb_name):
            svgs = page.eval_on_selector_all(
                "main .jp-RenderedSVG svg", "els => els.filter(e => e.getBBox().width > 0).length")
            assert imgs or svgs, f"{nb_name} has a figure but the page shows no rendered image"
        if exp["api"]:
            heads = page.locator(".celltag_api-entry :is(h2, h3, h4)").all_inner_texts()
            heads = {h.replace("¶", "").strip() for h in heads}
            missing = [n for n in exp["api"] if n not in heads]
            assert heads and not missing, f"{nb_name}: no API entry for {missing} (shown: {heads})"

        hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
    finally:
        page.close()
    origin = urlparse(server).netloc
    broken = []
    for href in sorted(set(hrefs)):
        if urlparse(href).netloc != origin: continue
        target, frag = urldefrag(href)
        if urlparse(target).path.lstrip("/") in LEFT_OUT: continue
        status, html = _fetch(target)
        if status != 200: broken.append(f"{href} -> HTTP {status}")
        elif frag and frag not in _ids(html): broken.append(f"{href} -> no #{frag} on that page")
    assert not broken, f"{nb_name}: broken internal links:\n" + "\n".join(broken)


@pytest.mark.browser
def test_client_api_page(browser, server):
    "The client's page shows `JupyterHealthCHClient` and its methods with signatures and docs."
    nb_name = "03_client.ipynb"
    if nb_name not in PAGES: pytest.skip("03_client.ipynb is not written yet")
    page, errors = _open(browser, server + page_name(nb_name))
    entries = page.eval_on_selector_all(".celltag_api-entry", """els => els.map(e => ({
        head: (e.querySelector('h2, h3, h4') || {innerText: ''}).innerText.replace('¶', '').trim(),
        signature: (e.querySelector('pre') || {innerText: ''}).innerText,
        text: e.innerText}))""")
    page.close()
    assert not errors, errors
    by_head = {e["head"]: e for e in entries}
    assert "JupyterHealthCHClient" in by_head, f"no API entry for the class: {list(by_head)}"
    methods = {h: e for h, e in by_head.items() if h.startswith("JupyterHealthCHClient.")}
    assert methods, f"no method of JupyterHealthCHClient is documented: {list(by_head)}"
    for h, e in methods.items():
        name = h.split(".", 1)[1]
        assert name in e["signature"] and "(" in e["signature"], f"{h}: no signature shown"
        doc = e["text"].replace(e["signature"], "").replace(h, "").replace("source", "").strip()
        assert doc, f"{h}: no docstring shown"


def test_missing_notebook_is_named(tmp_path):
    "A navigation entry without its notebook fails the build and names the notebook."
    cfg = tmp_path / "_quarto.yml"
    cfg.write_text("website:\n  title: t\n  sidebar:\n    contents:\n      - index.ipynb\n"
                   "      - section: S\n        contents: [99_nowhere.ipynb]\n")
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "site.py"), "--out",
                          str(tmp_path / "out"), "--config", str(cfg)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "99_nowhere.ipynb" in res.stderr, res.stdout + res.stderr
