"""Write README.md from nbs/index.ipynb without Quarto; `--check` only reports whether it is current.

    python tools/readme.py           # regenerate README.md (and index_files/ for figures)
    python tools/readme.py --check   # exit 1 if README.md is out of date
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from nbconvert import MarkdownExporter

sys.path.insert(0, str(Path(__file__).parent))
from nbproc import ROOT, nbs_path, process_notebook  # noqa: E402

FILES_DIR = "index_files"


def render_readme() -> tuple[str, dict[str, bytes]]:
    "The README text and the figure files it links to."
    nb, front = process_notebook(nbs_path() / "index.ipynb")
    body, res = MarkdownExporter().from_notebook_node(
        nb, resources={"output_files_dir": FILES_DIR, "unique_key": "index"})
    head = f"# {front.get('title', 'jupyter_health')}\n\n"
    if front.get("description"): head += f"> {front['description']}\n\n"
    text = head + body.strip() + "\n"
    text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    # Links between notebooks are relative to nbs/; the README sits one folder up.
    text = re.sub(r"\]\((?!https?:|/|#)([\w.-]+\.ipynb)", r"](nbs/\1", text)
    return text, dict(res.get("outputs", {}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check that README.md is current")
    args = ap.parse_args()
    text, files = render_readme()
    readme = ROOT / "README.md"
    stale = [n for n, b in files.items() if not (ROOT / n).exists() or (ROOT / n).read_bytes() != b]
    current = readme.exists() and readme.read_text(encoding="utf-8") == text and not stale
    if args.check:
        if not current:
            print("README.md is out of date with nbs/index.ipynb: run `python tools/readme.py`.")
        return 0 if current else 1
    readme.write_text(text, encoding="utf-8")
    for name, data in files.items():
        (ROOT / name).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / name).write_bytes(data)
    print(f"wrote README.md ({len(files)} figure file(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
