"""Run nbdev's own notebook processing without Quarto, for the README and the offline site.

nbdev hands processed notebooks to Quarto. Quarto cannot be installed on every machine, so the
README and the offline docs take the same processed notebooks (directives applied, hidden cells
dropped, `show_doc` entries rendered) and give them to nbconvert instead.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import nbformat
from execnb.nbio import read_nb
from nbdev.config import get_config
from nbdev.processors import FilterDefaults

ROOT = Path(__file__).resolve().parents[1]


def _jsonable(o):
    "nbdev hangs fastcore objects (`AttrDict`, `L`, paths) on the notebook; make them plain JSON."
    if isinstance(o, (list, tuple, set)) or type(o).__name__ == "L": return list(o)
    if isinstance(o, Mapping): return dict(o)
    return str(o)


def process_notebook(path: Path) -> tuple[nbformat.NotebookNode, dict]:
    "Apply nbdev's documentation processors to `path`; returns the notebook and its front matter."
    cwd = os.getcwd()
    os.chdir(path.parent)  # show_doc cells and relative paths run where the notebook lives
    try:
        nb = read_nb(path)
        FilterDefaults()(nb)
    finally:
        os.chdir(cwd)
    front = dict(getattr(nb, "frontmatter_", {}) or {})
    raw = json.loads(json.dumps(nb, default=_jsonable))
    for k in [k for k in raw if k.endswith("_")]: raw.pop(k)  # nbdev's own bookkeeping
    # Front matter comes back as a raw YAML cell for Quarto; our renderers take it from `front`.
    raw["cells"] = [c for c in raw["cells"]
                    if not (c["cell_type"] == "raw" and "".join(c["source"]).startswith("---"))]
    for i, c in enumerate(raw["cells"]):
        c.setdefault("id", f"cell-{i}")
        for k in [k for k in c if k.endswith("_")]: c.pop(k)
        c.setdefault("metadata", {})
        if c["cell_type"] == "code":
            c.setdefault("outputs", []); c.setdefault("execution_count", None)
    raw.setdefault("nbformat", 4); raw.setdefault("nbformat_minor", 5)
    raw.setdefault("metadata", {})["language_info"] = {"name": "python"}  # fenced as python
    # Reading the JSON back through nbformat joins nbdev's list-of-lines outputs into strings.
    return nbformat.reads(json.dumps(raw), as_version=4), front


def nbs_path() -> Path: return get_config().nbs_path
