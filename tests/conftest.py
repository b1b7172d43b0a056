"""Fixtures and paths shared by the test suite."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
SHARED = ROOT.parent / "shared"
BIN = Path(os.environ.get("VIRTUAL_ENV", "")) / "bin" if os.environ.get("VIRTUAL_ENV") else None


def tool(name: str) -> str:
    "Path of a console script installed beside the running Python (the project's venv)."
    import sys
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else name


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    "The ../shared folder; tests that need it skip with a reason when a fresh clone has none."
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a fresh clone has no ../shared); CI provides it")
    return SHARED
