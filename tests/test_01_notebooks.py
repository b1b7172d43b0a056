"""Every notebook runs top to bottom with its inline tests, each as its own pytest case."""
from __future__ import annotations

import subprocess

import pytest

from conftest import NBS, ROOT, tool

NOTEBOOKS = sorted(NBS.glob("*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[n.stem for n in NOTEBOOKS])
def test_notebook_runs(nb):
    res = subprocess.run([tool("nbdev_test"), "--path", str(nb)], cwd=ROOT,
                         capture_output=True, text=True, timeout=1800)
    out = (res.stdout + res.stderr)[-6000:]
    assert res.returncode == 0, f"{nb.relative_to(ROOT)} failed its inline tests:\n{out}"
