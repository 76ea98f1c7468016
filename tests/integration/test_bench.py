"""``invoke bench`` runs and its JSON rows are well formed. Nothing here is about speed:
the figures are whatever this machine gives; only their shape and consistency are checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.harness import STATUSES, Goal, Row
from tests.conftest import ROOT

FIELDS = {
    "name": str,
    "what": str,
    "unit": str,
    "goal": str,
    "status": str,
    "reason": str,
    "runs": int,
}
NUMBERS = ("ours", "baseline", "ratio", "ours_min", "ours_max", "baseline_min", "baseline_max")


def test_quick_json_tail_rows_are_well_formed() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env["BENCH_PYTHON"] = sys.executable  # not a developer's own .venv
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "bench", "--quick", "--json", "--only", "tail"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)  # nothing but the JSON on stdout
    assert set(result) == {"machine", "results"}
    assert result["machine"]["cpus"] and result["machine"]["python"]
    rows = result["results"]
    assert [r["name"] for r in rows] == ["tail", "tail.library"]
    for row in rows:
        for key, kind in FIELDS.items():
            assert isinstance(row[key], kind), (key, row)
        assert row["status"] in ("met", "not met"), row
        assert isinstance(row["meets_goal"], bool)
        assert row["meets_goal"] == (row["status"] == "met")
        for key in NUMBERS:
            assert isinstance(row[key], float) and row[key] > 0, (key, row)
        assert row["ours_min"] <= row["ours"] <= row["ours_max"]
        assert row["baseline_min"] <= row["baseline"] <= row["baseline_max"]
        assert abs(row["ratio"] - row["ours"] / row["baseline"]) < 0.01 * row["ratio"]
        assert row["goal"] == "ratio <= 1.2" and row["unit"] == "s"
        assert row["meets_goal"] == (row["ratio"] <= 1.2)
        assert row["runs"] >= 3


def test_a_row_without_its_baseline_is_skipped_never_met() -> None:
    row = Row("x", "what", "s", Goal("ratio", "<=", 1.3), ours=[1.0], skipped="no curl")
    data = row.as_json()
    assert (data["status"], data["meets_goal"], data["reason"]) == ("skipped", None, "no curl")
    assert data["status"] in STATUSES
    unmeasured = Row("y", "what", "s", Goal("ratio", "<=", 1.3), ours=[1.0]).as_json()
    assert unmeasured["status"] == "error" and unmeasured["meets_goal"] is None
    slow = Row("z", "what", "s", Goal("ratio", "<=", 1.3), ours=[2.0], baseline=[1.0]).as_json()
    assert (slow["ratio"], slow["meets_goal"], slow["status"]) == (2.0, False, "not met")
    absolute = Row("a", "what", "s", Goal("ours", "<=", 1.0), ours=[0.2, 0.3, 1.5]).as_json()
    assert (absolute["ours"], absolute["ratio"], absolute["status"]) == (0.3, None, "met")
