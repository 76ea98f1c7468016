"""Soak: a managed server under continuous client load and continuous logging with rotation.

Pass criteria:
- the supervisor's resident memory stays flat: within ``--rss-slack-mb`` (default 4 MB) of
  its size after the first minute (or after the first sixth of a shorter run);
- every log line is accounted for: the server is made to log ``soak-line-<n>`` for
  n = 1..N (``DEBUG LOG``), and each appears exactly once, in order, across the log and
  its rotated backups (``server.log_max_bytes`` is small, so rotation runs all the time);
- no client errors (a Python client checks every reply; ``redis-benchmark``, when on PATH,
  runs in bounded rounds and must exit 0 each time);
- a clean graceful stop (SHUTDOWN, exit code 0).

Run: ``python benchmarks/soak.py --minutes 10`` (``pytest -m soak`` runs a short one).
Needs a real redis-server 7+ (``--enable-debug-command local`` for DEBUG LOG).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devserver.config import load_settings  # noqa: E402
from devserver.server import resp  # noqa: E402
from devserver.server.start import start as start_server  # noqa: E402
from devserver.server.stop import stop as stop_server  # noqa: E402

LOG_RATE = 400  # soak-line-<n> lines per second
LOG_MAX_BYTES = 256 * 1024


@dataclass
class SoakReport:
    minutes: float
    ok: bool = False
    failures: list[str] = field(default_factory=list)
    client_ops: int = 0
    client_errors: int = 0
    benchmark_rounds: int = 0
    benchmark_failures: int = 0
    log_lines_sent: int = 0
    log_lines_found: int = 0
    log_files: int = 0
    dropped_markers: int = 0
    rss_baseline_mb: float = 0.0
    rss_max_mb: float = 0.0
    rss_end_mb: float = 0.0
    rss_samples: int = 0
    rss_per_minute_mb: list[float] = field(default_factory=list)
    stop_method: str = ""
    stop_exit_status: str = ""
    stop_seconds: float = 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _client_load(port: int, stop: threading.Event, report: SoakReport) -> None:
    """A bounded loop of checked SET/GET/LPUSH/RPOP batches on one connection."""
    n = 0
    while not stop.is_set():
        n += 1
        key = f"soak:k:{n % 1000}"
        try:
            got = resp.call(
                "127.0.0.1",
                port,
                [
                    ["SET", key, str(n)],
                    ["GET", key],
                    ["LPUSH", "soak:q", str(n)],
                    ["RPOP", "soak:q"],
                ],
                timeout=5,
            )
            if got != ["OK", str(n), 1, str(n)]:
                report.client_errors += 1
        except Exception:
            report.client_errors += 1
        report.client_ops += 4
        stop.wait(0.002)


def _benchmark_load(port: int, stop: threading.Event, report: SoakReport) -> None:
    exe = shutil.which("redis-benchmark")
    if not exe:
        return
    while not stop.is_set():
        done = subprocess.run(
            [
                exe,
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-q",
                "-n",
                "5000",
                "-c",
                "2",
                "-t",
                "set,get,lpush,rpop",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        report.benchmark_rounds += 1
        if done.returncode != 0 or "error" in (done.stdout + done.stderr).lower():
            report.benchmark_failures += 1
        stop.wait(2.0)


def _logger(port: int, stop: threading.Event, report: SoakReport) -> None:
    """Make the server log numbered lines at a steady rate (DEBUG LOG)."""
    try:
        _log_lines(port, stop, report)
    except Exception as exc:
        report.failures.append(f"the logging client failed: {exc!r}")


def _log_lines(port: int, stop: threading.Event, report: SoakReport) -> None:
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        reader = sock.makefile("rb")
        while not stop.is_set():
            due = int((time.monotonic() - began) * LOG_RATE)
            batch = min(due - report.log_lines_sent, 200)
            if batch <= 0:
                stop.wait(0.01)
                continue
            first = report.log_lines_sent + 1
            sock.sendall(
                b"".join(
                    resp.encode(["DEBUG", "LOG", f"soak-line-{i}"])
                    for i in range(first, first + batch)
                )
            )
            for _ in range(batch):
                line = reader.readline()
                if not line.startswith(b"+"):
                    report.client_errors += 1
            report.log_lines_sent += batch


def _account_log(log_file: Path, report: SoakReport) -> None:
    files = sorted(
        log_file.parent.glob(log_file.name + ".*"),
        key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0,
        reverse=True,
    )
    files.append(log_file)
    report.log_files = len(files)
    pattern = re.compile(rb"soak-line-(\d+)\b")
    expected = 1
    for path in files:
        data = path.read_bytes()
        report.dropped_markers += data.count(b"log lines dropped")
        for match in pattern.finditer(data):
            number = int(match.group(1))
            if number != expected:
                report.failures.append(
                    f"log line {expected} missing or out of order (saw {number})"
                )
                return
            expected += 1
            report.log_lines_found += 1
    if report.log_lines_found != report.log_lines_sent:
        report.failures.append(
            f"{report.log_lines_sent} lines logged, {report.log_lines_found} found in the log"
        )


def run(minutes: float, rss_slack_mb: float = 4.0, keep: bool = False) -> SoakReport:
    import psutil

    report = SoakReport(minutes=minutes)
    project = Path(tempfile.mkdtemp(prefix="devserver-soak-"))
    settings = load_settings(
        {
            "server": {
                "flavor": "redis",
                "port": _free_port(),
                "log_max_bytes": LOG_MAX_BYTES,
                "log_backups": 1000,
                "extra_args": "--enable-debug-command local",
            }
        },
        project,
    )
    state = start_server(settings).state
    supervisor = psutil.Process(state.supervisor_pid)
    stop = threading.Event()
    threads = [
        threading.Thread(target=target, args=(settings.port, stop, report), daemon=True)
        for target in (_client_load, _benchmark_load, _logger)
    ]
    for thread in threads:
        thread.start()
    total = minutes * 60
    baseline_at = min(60.0, total / 6)
    began = time.monotonic()
    baseline = 0.0
    try:
        while (elapsed := time.monotonic() - began) < total:
            time.sleep(min(5.0, total - elapsed))
            rss = supervisor.memory_info().rss / 1048576
            report.rss_samples += 1
            if int(time.monotonic() - began) // 60 >= len(report.rss_per_minute_mb):
                report.rss_per_minute_mb.append(round(rss, 2))
            if not baseline and time.monotonic() - began >= baseline_at:
                baseline = report.rss_baseline_mb = rss
            if baseline:
                report.rss_max_mb = max(report.rss_max_mb, rss)
            report.rss_end_mb = rss
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=130)
        result = stop_server(settings)
    report.stop_method, report.stop_exit_status = result.method, result.exit_status
    report.stop_seconds = round(result.seconds, 2)
    _account_log(settings.log_file("redis"), report)
    if report.rss_max_mb - report.rss_baseline_mb > rss_slack_mb:
        grew = f"{report.rss_baseline_mb:.1f} MB to {report.rss_max_mb:.1f} MB"
        report.failures.append(f"supervisor RSS grew from {grew}")
    if report.client_errors or report.benchmark_failures:
        bad = f"{report.client_errors} client errors, {report.benchmark_failures} failed rounds"
        report.failures.append(bad)
    if report.dropped_markers:
        report.failures.append(f"{report.dropped_markers} 'log lines dropped' markers")
    if result.method != "shutdown" or result.exit_status != "code 0":
        report.failures.append(f"stop was not clean: {result.method}, {result.exit_status!r}")
    report.ok = not report.failures
    for name in ("rss_baseline_mb", "rss_max_mb", "rss_end_mb"):
        setattr(report, name, round(getattr(report, name), 2))
    if not keep:
        shutil.rmtree(project, ignore_errors=True)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rss-slack-mb", type=float, default=4.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp project (logs)")
    args = parser.parse_args()
    report = run(args.minutes, args.rss_slack_mb, args.keep)
    print(json.dumps(asdict(report), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
