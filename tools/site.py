"""Build the documentation site offline into a folder of static HTML, without Quarto.

    python tools/site.py                  # writes _site/index.html and one page per notebook
    python tools/site.py --out DIR        # somewhere else
    python tools/site.py --allow-missing  # leave out entries whose notebook is not written yet
    python tools/site.py --proc-dir DIR   # also keep nbdev's processed notebooks (like its _proc)

The pages are the ones `nbdev_docs` makes with Quarto: the navigation (sections, order, site
title) comes from `_quarto.yml`; each notebook goes through nbdev's own processing (directives,
hidden cells, `show_doc` API entries; see tools/nbproc.py) in a process of its own, as nbdev
does; nbconvert renders it. Our glue only turns Quarto-only markdown (callouts, link attributes)
into plain HTML, names pages the way nbdev does (`00_config.ipynb` -> `config.html`) and adds the
sidebar. It exits non-zero, naming the notebook, when a navigation entry is missing or a page
fails to process or render.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml
from bs4 import BeautifulSoup
from jinja2 import DictLoader
from nbconvert import HTMLExporter
from traitlets.config import Config

sys.path.insert(0, str(Path(__file__).parent))
from nbproc import ROOT, nbs_path, process_notebook  # noqa: E402

TEMPLATE = r"""
{%- extends 'lab/index.html.j2' -%}
{#- Offline: no require.js, MathJax or Mermaid from a CDN. -#}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block extra_css -%}
<link rel="icon" href="data:,">
<link rel="stylesheet" href="site.css">
<link rel="stylesheet" href="styles.css">
{%- endblock extra_css -%}
{%- block body_header -%}
<body class="jp-Notebook" data-jp-theme-light="true" data-jp-theme-name="JupyterLab Light">
<header class="site-header"><a href="index.html">{{ resources.site.title | e }}</a></header>
<div class="site-layout">
<nav class="site-sidebar" aria-label="Contents"><ul>
{%- for item in resources.site.nav recursive %}
  {%- if item.children %}
  <li class="nav-section"><span>{{ item.text | e }}</span><ul>{{ loop(item.children) }}</ul></li>
  {%- else %}
  <li{% if item.href == resources.site.page %} class="active"{% endif %}>
    <a href="{{ item.href }}">{{ item.text | e }}</a></li>
  {%- endif %}
{%- endfor %}
</ul></nav>
<main class="site-main">
<header class="page-header">
<h1 class="page-title">{{ resources.site.page_title | e }}</h1>
{%- if resources.site.description %}
<p class="page-description">{{ resources.site.description | e }}</p>
{%- endif %}
</header>
{%- endblock body_header -%}
{%- block body_footer -%}
</main>
</div>
</body>
{%- endblock body_footer -%}
"""

SITE_CSS = """\
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
.site-header { background: #2780e3; padding: 0.6rem 1.2rem; }
.site-header a { color: #fff; font-weight: 600; font-size: 1.15rem; text-decoration: none; }
.site-layout { display: flex; align-items: flex-start; }
.site-sidebar { flex: 0 0 15rem; position: sticky; top: 0; max-height: 100vh; overflow-y: auto;
  padding: 1rem 0.5rem 2rem 1rem; font-size: 0.92rem; box-sizing: border-box; }
.site-sidebar ul { list-style: none; padding-left: 0; margin: 0; }
.site-sidebar ul ul { padding-left: 0.8rem; }
.site-sidebar li { margin: 0.25rem 0; }
.site-sidebar .nav-section > span { display: block; margin-top: 0.8rem; font-weight: 600; }
.site-sidebar a { color: #333; text-decoration: none; }
.site-sidebar li.active > a { color: #2780e3; font-weight: 600; }
.site-main { flex: 1 1 auto; min-width: 0; max-width: 60rem; padding: 0 1.5rem 4rem; }
.page-title { margin-bottom: 0.2rem; }
.page-description { color: #555; font-size: 1.1rem; margin-top: 0; }
.jp-Notebook { padding: 0; }
.jp-Cell { padding-left: 0; padding-right: 0; }
.jp-RenderedHTMLCommon h3 code, .jp-RenderedMarkdown blockquote pre { white-space: pre-wrap; }
.jp-RenderedMarkdown blockquote { border-left: 3px solid #2780e3; margin-left: 0; }
.celltag_callout { border-left: 4px solid #2780e3; background: #f3f8fe; padding: 0.2rem 1rem;
  margin: 0.6rem 0; border-radius: 3px; }
.celltag_callout-warning, .celltag_callout-caution { border-color: #f0ad4e; background: #fef8ee; }
.celltag_callout-important { border-color: #d9534f; background: #fdf1f0; }
.celltag_callout-tip { border-color: #3fb618; background: #f1faef; }
body .jp-RenderedMarkdown pre { background: #f5f5f5; padding: 0.5rem 0.8rem; margin: 0.5rem 0 1rem;
  border-radius: 3px;
  overflow-x: auto; }
.celltag_api-entry { border-top: 1px solid #dde; margin-top: 1.2rem; }
.celltag_api-entry hr { display: none; }
.celltag_api-entry p:has(> a:only-child[href*="/blob/"]) { float: right; font-size: smaller; }
.celltag_api-entry h2, .celltag_api-entry h3, .celltag_api-entry h4 {
  font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; }
"""


@dataclass
class Page:
    "One notebook of the navigation and the HTML page it becomes."
    nb: Path
    href: str = ""
    title: str = ""
    description: str = ""
    nb_node: object = None


@dataclass
class Nav:
    "The sidebar: entries in reading order, sections nested, as `_quarto.yml` lists them."
    items: list[dict] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)


def read_nav(quarto_yml: Path) -> tuple[str, Nav]:
    "Site title and sidebar entries from `website.sidebar.contents` in `quarto_yml`."
    cfg = yaml.safe_load(quarto_yml.read_text(encoding="utf-8"))
    site = cfg.get("website", {})
    sidebar = site.get("sidebar", {})
    if isinstance(sidebar, list): sidebar = sidebar[0] if sidebar else {}
    nav = Nav()

    def walk(entries) -> list[dict]:
        out = []
        for e in entries or []:
            if isinstance(e, str): e = {"href": e}
            if "section" in e or "contents" in e:
                out.append({"text": e.get("section", ""), "children": walk(e.get("contents"))})
            elif "href" in e:
                out.append({"src": e["href"], "text": e.get("text")})
                if e["href"].endswith(".ipynb"): nav.notebooks.append(e["href"])
        return out

    nav.items = walk(sidebar.get("contents"))
    return site.get("title", "Documentation"), nav


def page_name(nb_name: str) -> str:
    "The page nbdev/Quarto make from a notebook: lower case, number prefix dropped (`config.html`)."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(nb_name)).name


# Quarto-only markdown that plain CommonMark (nbconvert's mistune) would show as literal text.
_FENCE = re.compile(r"^(:{3,})\s*(\{[^}]*\}|[\w-]+)?\s*$")
_LINK_ATTRS = re.compile(r"(\]\([^)\s]*\))\{[^}\n]*\}")
_HEADING_ATTRS = re.compile(r"^(#{1,6}\s.*?)\s+\{[^}\n]*\}\s*$", re.M)


def quarto_md(md: str) -> list[tuple[str, list[str]]]:
    "Split markdown at Quarto's fenced divs (callouts): (text, classes) pieces, attributes dropped."
    pieces, cur, classes, depth, in_code = [], [], [], 0, False

    def flush():
        text = _HEADING_ATTRS.sub(r"\1", _LINK_ATTRS.sub(r"\1", "\n".join(cur))).strip("\n")
        if text.strip(): pieces.append((text, classes))
        cur.clear()

    for line in md.split("\n"):
        if line.lstrip().startswith(("```", "~~~")): in_code = not in_code
        m = None if in_code else _FENCE.match(line.strip())
        if not m or not (m.group(2) or depth):
            cur.append(line)
            continue
        if m.group(2):  # an opening fence: ::: {.callout-note title="..."} or ::: name
            depth += 1
            if depth > 1: continue  # a div inside a div: keep its text, drop the fence
            flush()
            spec = m.group(2).strip("{}")
            classes = [c[1:] for c in spec.split() if c.startswith(".")] or spec.split()[:1]
            if any(c.startswith("callout") for c in classes): classes = ["callout", *classes]
            title = re.search(r'title="([^"]*)"', spec)
            if title: cur.append(f"**{title.group(1)}**\n")
        else:
            depth -= 1
            if depth == 0: flush(); classes = []
    flush()
    return pieces


def plain_md(md: str) -> str:
    "Markdown with Quarto's fences and attribute braces taken out (for outputs)."
    return "\n\n".join(text for text, _ in quarto_md(md))


_DIRECTIVE = re.compile(r"^\s*#\|\s?(.*)$")


def prepare(nb) -> None:
    "Apply the Quarto cell options nbdev leaves for Quarto (echo, output, include) as tags."
    cells = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":  # a callout becomes a cell of its own, tagged to style
            for i, (text, classes) in enumerate(quarto_md(cell.source)):
                c = nbformat.v4.new_markdown_cell(text, id=f"{cell.get('id', 'md')}-{i}")
                c.metadata["tags"] = classes
                if cell.get("attachments"): c["attachments"] = cell["attachments"]
                cells.append(c)
            continue
        cells.append(cell)
        if cell.cell_type != "code": continue
        lines, opts = cell.source.split("\n"), {}
        for line in lines:
            m = _DIRECTIVE.match(line)
            if m and ":" in m.group(1):
                k, v = m.group(1).split(":", 1)
                opts[k.strip()] = v.strip().lower()
        cell.source = "\n".join(ln for ln in lines if not _DIRECTIVE.match(ln)).strip("\n")
        tags = set(cell.metadata.get("tags", []))
        if opts.get("include") == "false": tags.add("site-remove-cell")
        if opts.get("echo") == "false" or not cell.source.strip(): tags.add("site-remove-input")
        if opts.get("output") == "false": tags.add("site-remove-output")
        if re.match(r"show_doc\(", cell.source): tags.add("api-entry")  # styled, and tested
        cell.metadata["tags"] = sorted(tags)
        for out in cell.get("outputs", []):
            if "text/markdown" in out.get("data", {}):
                out["data"]["text/markdown"] = plain_md(out["data"]["text/markdown"])
    nb.cells = cells


def exporter() -> HTMLExporter:
    "nbconvert's JupyterLab HTML exporter with our page shell, images embedded."
    c = Config()
    c.TagRemovePreprocessor.remove_cell_tags = {"site-remove-cell"}
    c.TagRemovePreprocessor.remove_input_tags = {"site-remove-input"}
    c.TagRemovePreprocessor.remove_all_outputs_tags = {"site-remove-output"}
    c.TagRemovePreprocessor.enabled = True
    ex = HTMLExporter(config=c, template_name="lab", embed_images=True,
                      extra_loaders=[DictLoader({"site.html.j2": TEMPLATE})])
    ex.template_file = "site.html.j2"
    ex.exclude_input_prompt = ex.exclude_output_prompt = True
    return ex


def pandoc_id(text: str) -> str:
    "The id pandoc (so Quarto) gives a heading; nbdev's API links point at these."
    s = re.sub(r"[^\w\s.-]", "", text.strip().lower())
    s = re.sub(r"\s+", "-", s)
    return re.sub(r"^[^a-z]+", "", s) or "section"


def fix_html(html: str, links: dict[str, str], doc_url: str) -> str:
    "Quarto-style heading ids, and links to notebooks or to the published site made relative."
    soup = BeautifulSoup(html, "html.parser")
    seen: dict[str, int] = {}
    renamed: dict[str, str] = {}
    for h in soup.select("main h1, main h2, main h3, main h4, main h5, main h6"):
        text = h.get_text(" ", strip=True).rstrip("¶").strip()
        new = pandoc_id(text)
        n = seen.get(new, 0); seen[new] = n + 1
        if n: new = f"{new}-{n}"
        if h.get("id"): renamed[h["id"]] = new
        h["id"] = new
    for a in soup.find_all("a", href=True):
        href = a["href"]
        if href.startswith("#") and href[1:] in renamed:
            a["href"] = "#" + renamed[href[1:]]
            continue
        if doc_url and href.startswith(doc_url):
            href = href[len(doc_url):].lstrip("/") or "index.html"
        target, _, frag = href.partition("#")
        if target in links: href = links[target] + (f"#{frag}" if frag else "")
        a["href"] = href
    return str(soup)


def _why(e: BaseException) -> str:
    "The exception and, when nbdev wraps a failing cell, the error the cell raised."
    msg = f"{type(e).__name__}: {e}"
    if e.__cause__ is not None:
        msg += f"\n    caused by {type(e.__cause__).__name__}: {e.__cause__}"
        if re.search(r"^\s*(from \S+ )?import ", str(e), re.M):
            msg += ("\n    (to render show_doc, nbdev runs exported cells and every cell that "
                    "imports something: keep imports in cells of their own)")
    return msg


NB_TIMEOUT = 600  # seconds nbdev may spend running one notebook's cells for its docs


def _process_isolated(path: Path) -> tuple[object, dict, str]:
    "nbdev's processing of `path` in a fresh Python, as nbdev_docs does: (notebook, front, error)."
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "processed.json"
        try:
            res = subprocess.run([sys.executable, __file__, "--process-one", str(path), str(dest)],
                                 cwd=ROOT, capture_output=True, text=True, timeout=NB_TIMEOUT)
        except subprocess.TimeoutExpired:
            return None, {}, f"running its cells took longer than {NB_TIMEOUT} s"
        if res.returncode != 0 or not dest.exists():
            return None, {}, (res.stdout.strip() or res.stderr.strip()[-3000:])
        data = json.loads(dest.read_text(encoding="utf-8"))
    return nbformat.from_dict(data["nb"]), data["front"], ""


def _process_one(path: Path, dest: Path) -> int:
    "Worker for `_process_isolated`: write the processed notebook, or print why it failed."
    warnings.simplefilter("ignore")  # nbdev's advice on mixed cells is repeated in our message
    try: nb, front = process_notebook(path)
    except Exception as e:
        print(_why(e))
        return 1
    dest.write_text(json.dumps({"nb": nb, "front": front}, default=str), encoding="utf-8")
    return 0


def build(out: Path, allow_missing: bool = False, quarto_yml: Path = ROOT / "_quarto.yml",
          proc_dir: Path | None = None) -> list[str]:
    "Write the site into `out`; returns the problems (missing notebooks, pages that failed)."
    from nbdev.config import get_config
    cfg = get_config()
    nbs = nbs_path()
    title, nav = read_nav(quarto_yml)
    problems, pages = [], {}
    for name in nav.notebooks:
        if (nbs / name).exists(): pages[name] = Page(nbs / name, page_name(name))
        elif not allow_missing:
            problems.append(f"{name}: in the sidebar of {quarto_yml.name}, but nbs/{name} "
                            "does not exist")
    ex = exporter()
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        done = dict(zip(pages, pool.map(lambda p: _process_isolated(p.nb), pages.values())))
    for name, page in pages.items():
        nb, front, err = done[name]
        if err:
            problems.append(f"{name}: nbdev's processing failed (nbdev_docs would fail too): {err}")
            continue
        if proc_dir:  # what nbdev made of it, before our glue, like nbdev's own _proc folder
            proc_dir.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, proc_dir / name)
        prepare(nb)
        page.href = front.get("output-file", page.href)
        page.title = str(front.get("title") or page.nb.stem)
        page.description = str(front.get("description") or "")
        page.nb_node = nb
    if problems: return problems

    def entries(items):
        res = []
        for it in items:
            if "children" in it:
                kids = entries(it["children"])
                if kids: res.append({"text": it["text"], "children": kids})
            elif it["src"] in pages:
                p = pages[it["src"]]
                res.append({"href": p.href, "text": it.get("text") or p.title})
            elif not it["src"].endswith(".ipynb"):
                res.append({"href": it["src"], "text": it.get("text") or it["src"]})
        return res

    side = entries(nav.items)
    links = {n: p.href for n, p in pages.items()}
    links.update({f"./{n}": h for n, h in links.items()})
    doc_url = (str(cfg.get("doc_host", "")).rstrip("/") + "/"
               + str(cfg.get("doc_baseurl", "")).strip("/")).rstrip("/") + "/"
    out.mkdir(parents=True, exist_ok=True)
    for name, page in pages.items():
        page.nb_node.metadata["title"] = page.title
        site = {"title": title, "nav": side, "page": page.href, "page_title": page.title,
                "description": page.description}
        try:
            html, _ = ex.from_notebook_node(page.nb_node, resources={"site": site})
            (out / page.href).write_text(fix_html(html, links, doc_url), encoding="utf-8")
        except Exception as e:
            problems.append(f"{name}: rendering failed: {_why(e)}")
    shutil.copy(nbs / "styles.css", out / "styles.css")
    (out / "site.css").write_text(SITE_CSS, encoding="utf-8")
    if not (out / "index.html").exists() and pages:
        problems.append("no index.ipynb in the navigation, so the site has no index.html")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "_site", help="output folder (_site)")
    ap.add_argument("--allow-missing", action="store_true",
                    help="leave out navigation entries whose notebook does not exist yet")
    ap.add_argument("--config", type=Path, default=ROOT / "_quarto.yml",
                    help="the Quarto configuration whose sidebar lists the pages (_quarto.yml)")
    ap.add_argument("--proc-dir", type=Path,
                    help="also keep nbdev's processed notebooks here (for checks and debugging)")
    ap.add_argument("--process-one", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.process_one: return _process_one(*args.process_one)
    problems = build(args.out.resolve(), args.allow_missing, args.config.resolve(),
                     args.proc_dir and args.proc_dir.resolve())
    if problems:
        print("site build failed:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 1
    print(f"wrote {args.out}/index.html and the pages it links to; open it in a browser")
    return 0


if __name__ == "__main__":
    sys.exit(main())
