"""The README stays short and the pages it points to exist: every relative link in the README,
docs/ and the other READMEs resolves (file and heading), and the bench table's markers are
where benchmarks/performance_table.py writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.performance_table import BEGIN, END
from tests.conftest import ROOT

PAGES = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        ROOT / "benchmarks" / "README.md",
        ROOT / "tests" / "winpython" / "README.md",
        ROOT / "examples" / "jobqueue" / "README.md",
    ]
)
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.*)$", text, re.M)
    }


def test_readme_is_at_most_15_kb() -> None:
    assert (ROOT / "README.md").stat().st_size <= 15 * 1024


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    for link in LINK.findall(text):
        if re.match(r"[a-z]+:", link):  # https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.relative_to(ROOT)}: {link} does not exist"
        assert ROOT in target.parents or target == ROOT, f"{link} leaves the repository"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{page.relative_to(ROOT)}: no heading #{anchor}"


def test_the_bench_table_markers_are_in_docs_performance() -> None:
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert text.index(BEGIN) < text.index(END)


def test_the_docs_say_what_to_do_outside_a_project_and_what_to_ignore() -> None:
    trouble = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert "Can't find any collection named 'tasks'!" in trouble
    assert "`devserver` command" in trouble
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "Add `bin/`, `data/`, `logs/` and `.env` to your project's `.gitignore`" in readme
