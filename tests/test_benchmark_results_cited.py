"""benchmarks/results/ keeps what the docs cite, and the docs cite only what is there.

A results run (``<date>-<name>.md`` or ``.txt``, with its ``.json`` and ``.png``) belongs in the
repository when the README, docs/, benchmarks/*.md or the code name it by its file name; a
run nothing names is clutter. And every results file the docs name must exist.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
RESULT_NAME = re.compile(r"\b20\d\d-\d\d-\d\d-[\w.-]+?\.(?:md|txt|json|png)\b")


def _citing_text() -> str:
    paths = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
             *sorted((REPO / "benchmarks").glob("*.md")),
             *sorted((REPO / "benchmarks").glob("*.py")),
             *sorted((REPO / "src" / "corolla").rglob("*.py"))]
    return "\n".join(p.read_text(encoding="utf-8") for p in paths)


def test_every_result_run_is_cited() -> None:
    text = _citing_text()
    runs = sorted({p.stem for p in RESULTS.iterdir() if p.suffix in (".md", ".txt")})
    assert runs, "no results at all?"
    uncited = [run for run in runs if not re.search(re.escape(run) + r"(?![\w-])", text)]
    assert not uncited, f"results nothing cites by name (cite or delete them): {uncited}"


def test_every_cited_result_exists() -> None:
    missing = sorted({name for name in RESULT_NAME.findall(_citing_text())
                      if not (RESULTS / name).exists()})
    assert not missing, f"cited but not in benchmarks/results/: {missing}"
