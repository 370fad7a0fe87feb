"""The project's documents point at what exists: every ``architecture.md §N`` in
the code and the documents names a section of docs/architecture.md, and nothing
cites a design file the repository does not hold."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [
    *ROOT.glob("ehr_service/**/*.py"),
    *ROOT.glob("migrations/**/*.py"),
    *ROOT.glob("tests/**/*.py"),
    *ROOT.glob("docs/*.md"),
    ROOT / "README.md",
    ROOT / "CHANGELOG.md",
    ROOT / "pyproject.toml",
]
CITATION = re.compile(r"architecture\.md §(\d+)")


def _sections() -> set[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return set(re.findall(r"^## (\d+)\. ", text, flags=re.MULTILINE))


def test_every_section_cited_exists() -> None:
    sections = _sections()
    assert {"3", "4", "9", "11"} <= sections
    missing = [
        f"{path.relative_to(ROOT)}: §{number}"
        for path in SOURCES
        if path.name != "test_docs.py"
        for number in CITATION.findall(path.read_text(encoding="utf-8"))
        if number not in sections
    ]
    assert not missing, missing


def test_no_citation_of_a_file_the_repository_lacks() -> None:
    design = "DESIGN" + ".md"  # spelled apart: this file is searched too
    assert not (ROOT / design).exists()
    citing = [
        str(path.relative_to(ROOT))
        for path in SOURCES
        if design in path.read_text(encoding="utf-8")
    ]
    assert not citing, citing
