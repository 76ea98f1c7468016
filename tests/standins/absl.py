"""Command-line flags and log lines the way an absl/helio program (Dragonfly) has them.

Test-only. Derived from abseil-cpp 20250512.1 (flags/parse.cc, flags/usage_config.cc,
log/internal/log_format.cc) and romange/helio 3d8b4ece14ed62cb516e36afbc8947c0cc392826
(base/init.cc, base/file_log_sink.cc), the versions dragonflydb/dragonfly
f8eca6d0b05c915cee9439036b5b04aebbb973bb builds with. Nothing is copied: the behaviour a
supervisor sees (messages, exit codes, where log lines go) is re-created.
"""

from __future__ import annotations

import getpass
import os
import resource
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

TRUE = ("true", "t", "yes", "y", "1")
FALSE = ("false", "f", "no", "n", "0")
SEVERITIES = "IWEF"


def load_flags(path: Path) -> dict[str, bool]:
    """name -> is boolean, from a ``*_flags.txt`` data file (see extract_flags.py)."""
    flags: dict[str, bool] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, kind = line.partition(" ")
            flags[name] = kind == "bool"
    return flags


def usage_error(message: str) -> None:
    """absl's ReportUsageError: ``ERROR: <msg>`` on stderr (the caller exits 1)."""
    sys.stderr.write(f"ERROR: {message}\n")


def parse_bool(value: str) -> bool | None:
    lowered = value.lower()
    return True if lowered in TRUE else False if lowered in FALSE else None


def _distance(a: str, b: str) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance, for "Did you mean"."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = i
    for j in range(len(b) + 1):
        rows[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[-1][-1]


def hints(name: str, flags: dict[str, bool]) -> list[str]:
    """The closest flag names. GUESS: absl keeps the first hints in its registry's (hash) order;
    here they are sorted, and at most kMaxHints (100) is not a concern."""
    cutoff = min(len(name) // 2 + 1, 3)  # kMaxDistance is 3
    scored: list[tuple[int, str]] = []
    for flag, is_bool in flags.items():
        scored.append((_distance(name, flag), flag))
        if is_bool:
            scored.append((_distance(name, "no" + flag), "no" + flag))
    best = min((d for d, _ in scored), default=cutoff + 1)
    return sorted(f for d, f in scored if d == best and d <= cutoff)


@dataclass
class Parsed:
    values: dict[str, str] = field(default_factory=dict)
    on_command_line: set[str] = field(default_factory=set)
    positional: list[str] = field(default_factory=list)


def parse_args(argv: list[str], flags: dict[str, bool], parsed: Parsed | None = None) -> Parsed:
    """absl::ParseCommandLine: exits 1 after printing every unknown flag, like the real one."""
    parsed = parsed or Parsed()
    unknown: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            parsed.positional += args
            break
        if not arg.startswith("-") or arg == "-":
            parsed.positional.append(arg)
            continue
        body = arg.lstrip("-")
        name, has_value, value = body.partition("=")
        is_bool = flags.get(name)
        negated = False
        if is_bool is None and name.startswith("no") and flags.get(name[2:]) is True:
            name, is_bool, negated = name[2:], True, True
        if is_bool is None:
            unknown.append(name)
            continue
        if is_bool:
            if negated and has_value:
                usage_error(
                    f"Negative form with assignment is not valid for the boolean flag '{name}'"
                )
                sys.exit(1)
            if has_value and parse_bool(value) is None:
                usage_error(f"Illegal value '{value}' specified for flag '{name}'")
                sys.exit(1)
            value = "false" if negated else (value if has_value else "true")
        elif not has_value:
            if not args:
                usage_error(f"Missing the value for the flag '{name}'")
                sys.exit(1)
            value = args.pop(0)
        if name == "flagfile":
            for path in value.split(","):
                parse_flagfile(Path(path), flags, parsed)
            continue
        parsed.values[name] = value
        parsed.on_command_line.add(name)
    for name in unknown:
        close = hints(name, flags)
        if close:
            usage_error(f"Unknown command line flag '{name}'. Did you mean: {', '.join(close)} ?")
        else:
            usage_error(f"Unknown command line flag '{name}'")
    if unknown:
        sys.exit(1)
    return parsed


def parse_flagfile(path: Path, flags: dict[str, bool], parsed: Parsed) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        usage_error(f"Can't open flagfile {path}")
        sys.exit(1)
    lines = [ln.strip() for ln in text.splitlines()]
    parse_args([ln for ln in lines if ln.startswith("-")], flags, parsed)


class Logger:
    """absl LOG with helio's FileLogSink: the prefix format, stderr threshold and log files.

    With --logtostderr every line goes to stderr and no file is written; otherwise only
    ERROR and FATAL reach stderr (absl's default stderrthreshold) and every line goes to
    ``<dir>/<program>.<user>.<SEVERITY>.<YYYYmmdd-HHMMSS>.<pid>.log`` (plus a symlink
    ``<program>.<SEVERITY>``), <dir> being --log_dir, else $TMPDIR, $TMP, /tmp or ./.
    """

    def __init__(self, program: str, to_stderr: bool, also_stderr: bool, log_dir: str,
                 threshold: int = 2) -> None:  # fmt: skip
        self.program = program
        self.threshold = 0 if (to_stderr or also_stderr) else threshold
        self.files: dict[int, IO[str]] = {}
        self.base_dir = "" if to_stderr else self._find_dir(log_dir)
        self.lock = threading.Lock()

    @staticmethod
    def _find_dir(log_dir: str) -> str:
        for candidate in (log_dir, os.environ.get("TMPDIR"), os.environ.get("TMP"), "/tmp", "./"):
            if candidate and os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
                return candidate.rstrip("/") + "/"
        return ""

    def _file(self, severity: int) -> IO[str] | None:
        if not self.base_dir:
            return None
        if severity not in self.files:
            name = ("INFO", "WARNING", "ERROR")[severity]
            base = f"{self.base_dir}{self.program}"
            stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
            path = f"{base}.{getpass.getuser()}.{name}.{stamp}.{os.getpid()}.log"
            self.files[severity] = open(path, "a", encoding="utf-8")  # noqa: SIM115
            link = f"{base}.{name}"
            try:
                os.unlink(link)
            except OSError:
                pass
            try:
                os.symlink(os.path.basename(path), link)
            except OSError:
                pass
        return self.files[severity]

    def log(self, severity: str, where: str, message: str) -> None:
        level = SEVERITIES.index(severity)
        now = time.time()
        stamp = time.strftime("%m%d %H:%M:%S", time.localtime(now))
        micros = int((now % 1) * 1_000_000)
        line = f"{severity}{stamp}.{micros:06d} {threading.get_native_id():7d} {where}] {message}\n"
        with self.lock:
            if level >= self.threshold:
                sys.stderr.write(line)
                sys.stderr.flush()
            for sev in range(min(level, 2), -1, -1):  # a line goes to its file and the lower ones
                handle = self._file(sev)
                if handle is not None:
                    handle.write(line)
                    handle.flush()

    def fatal(self, where: str, message: str) -> None:
        """LOG(FATAL): the line, absl's failure-signal report, then death by SIGABRT."""
        self.log("F", where, message)
        sys.stderr.write(f"*** SIGABRT received at time={int(time.time())} on cpu 0 ***\n")
        sys.stderr.flush()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the data dir
        signal.signal(signal.SIGABRT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGABRT)
