"""The project is in step with itself: exported code, clean notebooks, README, line width.

These run first (file order) so a drifted export is reported before anything uses it.
"""
from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import NBS, ROOT, tool

PKG = ROOT / "jupyter_health"
NOTEBOOKS = sorted(NBS.glob("*.ipynb"))


def _scratch_copy(tmp_path):
    "A copy of what nbdev reads and writes, so checks never touch the working tree."
    for name in ["settings.ini", "setup.py", "_quarto.yml"]:
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(NBS, tmp_path / "nbs", symlinks=True)
    shutil.copytree(PKG, tmp_path / "jupyter_health",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _source_notebook(py):
    m = re.search(r"File to edit: \.\./nbs/(\S+?\.ipynb)", py.read_text())
    return f"nbs/{m.group(1)}" if m else "its notebook"


def test_export_in_step(tmp_path):
    "Exporting the notebooks again changes nothing in `jupyter_health/`."
    scratch = _scratch_copy(tmp_path)
    res = subprocess.run([tool("nbdev_export")], cwd=scratch, capture_output=True, text=True)
    assert res.returncode == 0, f"nbdev_export failed:\n{res.stdout}\n{res.stderr}"
    ours = {p.relative_to(PKG) for p in PKG.rglob("*.py") if "__pycache__" not in p.parts}
    fresh = {p.relative_to(scratch / "jupyter_health")
             for p in (scratch / "jupyter_health").rglob("*.py") if "__pycache__" not in p.parts}
    problems = [f"jupyter_health/{p} is exported by no notebook (delete it or add its notebook)"
                for p in sorted(ours - fresh)]
    problems += [f"jupyter_health/{p} is missing: run nbdev_export" for p in sorted(fresh - ours)]
    for p in sorted(ours & fresh):
        if (PKG / p).read_text() != (scratch / "jupyter_health" / p).read_text():
            problems.append(f"jupyter_health/{p} differs from what {_source_notebook(PKG / p)} "
                            "exports: edit the notebook, not the .py, then run nbdev_export")
    assert not problems, "\n".join(problems)


def test_notebooks_clean(tmp_path):
    "`nbdev_clean` has nothing left to change in any notebook."
    scratch = _scratch_copy(tmp_path)
    res = subprocess.run([tool("nbdev_clean")], cwd=scratch, capture_output=True, text=True)
    assert res.returncode == 0, f"nbdev_clean failed:\n{res.stdout}\n{res.stderr}"
    dirty = [nb.name for nb in NOTEBOOKS
             if nb.read_text() != (scratch / "nbs" / nb.name).read_text()]
    assert not dirty, f"not clean: {', '.join(dirty)}; run nbdev_clean and commit the notebooks"


def test_readme_current():
    "README.md is what `tools/readme.py` makes from nbs/index.ipynb."
    res = subprocess.run([sys.executable, "tools/readme.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _long_lines(path, lines):
    in_all = False
    for i, line in enumerate(lines, 1):
        in_all = line.startswith("__all__") or (in_all and line.startswith(" " * 11))
        if len(line) > 100 and not in_all:  # nbdev wraps its generated __all__ at 120
            yield f"{path}:{i} is {len(line)} columns"


def test_line_width():
    "Authored code stays within 100 columns, in the notebooks and the exported modules."
    bad = []
    for py in sorted(PKG.glob("*.py")):
        if py.name != "_modidx.py":
            bad += _long_lines(py.relative_to(ROOT), py.read_text().splitlines())
    for nb in NOTEBOOKS:
        for c in json.loads(nb.read_text())["cells"]:
            if c["cell_type"] == "code":
                bad += _long_lines(nb.relative_to(ROOT), "".join(c["source"]).splitlines())
    assert not bad, "lines over 100 columns:\n" + "\n".join(bad)


def test_package_does_not_need_nbdev():
    "The installed package depends on neither nbdev nor fastcore; only the dev extras do."
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini")
    reqs = cfg["DEFAULT"]["requirements"].split()
    assert not [r for r in reqs if r.startswith(("nbdev", "fastcore", "execnb"))], reqs
    for py in PKG.glob("*.py"):
        imports = re.findall(r"^\s*(?:from|import) (nbdev|fastcore|execnb)\b", py.read_text(), re.M)
        assert not imports, f"{py.name} imports {imports}: keep such imports in non-exported cells"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_has_title(nb):
    "Every page starts with a `# Title` and a one-line `> description` (nbdev's front matter)."
    first = "".join(json.loads(nb.read_text())["cells"][0]["source"])
    assert first.startswith("# ") and "\n> " in first, f"{nb.name} needs '# Title' + '> summary'"
