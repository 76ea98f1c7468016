"""Regenerate docs/performance.md's table from a saved ``invoke bench --json`` result.

``python benchmarks/performance_table.py bench.json`` replaces what stands between the
``<!-- bench: table -->`` and ``<!-- bench: end -->`` markers with ``bench --markdown``'s
table for that result (machine, command and every row), so the page never carries figures
that no run produced.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import ROOT, markdown_lines

BEGIN, END = "<!-- bench: table -->", "<!-- bench: end -->"


def update(page: Path, result: dict[str, object]) -> None:
    text = page.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    table = "\n".join(markdown_lines(result))
    page.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/performance_table.py bench.json")
    result = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    update(ROOT / "docs" / "performance.md", result)
