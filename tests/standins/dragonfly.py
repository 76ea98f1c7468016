"""A stand-in for the dragonfly binary, for tests only: what a client and a supervisor can see.

Derived from dragonflydb/dragonfly at f8eca6d0b05c915cee9439036b5b04aebbb973bb (v1.40.0-87,
2026-08-22), read in src/server/dfly_main.cc (main, ParseFlagsFromEnv, RunEngine, --version),
src/server/server_family.cc (ShutdownCmd, Shutdown, LoadFromSnapshot, HELLO, INFO),
src/server/detail/save_stages_controller.cc (ValidateFilename, SaveDfs, file names) and
src/server/detail/snapshot_storage.cc (LoadPath: which snapshot the next start loads), and its
helio submodule 3d8b4ece (listener_interface.cc: the listening line; accept_server.cc: SIGTERM).
absl.py holds the flag parsing and log format. Nothing is copied.

Reproduced: the accepted flag set (dragonfly_flags.txt) and absl's fatal error, exit code 1,
for an unknown flag; ``DFLY_<flag>`` variables, LOG(FATAL) (SIGABRT) for an unknown one
(``DFLY_PASSWORD`` included: the source reads it with getenv but ParseFlagsFromEnv, which runs
first, knows no flag of that name); --dbfilename's extension rule; 256 MiB of --maxmemory per
proactor thread; --version with its ANSI colours; log lines on stderr only with --logtostderr;
RESP2/RESP3; SHUTDOWN [SAVE|SAFE|NOSAVE|NOW|FORCE] answering +OK, then closing the listener
and client connections, *then* writing the snapshot (``<name>-summary.dfs`` plus one
``<name>-NNNN.dfs`` per shard, written as ``.dfs.tmp`` and renamed), and the same on SIGTERM.

Simplified: the snapshot files' content is this stand-in's own (JSON), the load is done
before listening unless ``load_seconds`` is set (then in the background, as the real one), one
shard per --proactor_threads (default 2 here). ``STANDIN_CONFIG`` (set by the launcher that
tests/standins/package.py writes) sets the reported version, a slow save
(``save_seconds``: how long writing a snapshot takes, the files growing meanwhile) and a slow
load (``load_seconds``: the snapshot loads in the background, as in the real one, while
commands answer -LOADING).
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import re
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import absl
from respcore import OK, Client, Engine, Error

CONFIG: dict[str, Any] = globals().get("STANDIN_CONFIG") or {}
TAG = str(CONFIG.get("version", "v1.40.1"))
SHA = str(CONFIG.get("sha", "6fa2c9d1e0b6f4a1c2d3e4f5a6b7c8d9e0f1a2b3"))
BUILD_TIME = "2026-08-30 10:12:41"
REDIS_VERSION = "7.4.0"
MIB = 1024 * 1024
FLAGS = absl.load_flags(Path(__file__).with_name("dragonfly_flags.txt"))
DEFAULTS = {
    "port": "6379",
    "bind": "",
    "dir": "",
    "dbfilename": "dump-{timestamp}",
    "df_snapshot_format": "true",
    "logtostderr": "false",
    "alsologtostderr": "false",
    "log_dir": "",
    "stderrthreshold": "2",
    "maxmemory": "0",
    "proactor_threads": "0",
    "requirepass": "",
    "pidfile": "",
    "omit_basic_usage": "false",
    "version_check": "true",
}


def memory_bytes(text: str) -> int | None:
    """strings::MemoryBytesFlag. GUESS at the accepted spellings: digits with an optional
    k/m/g/t suffix, optionally followed by b or ib, any case."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?", text.strip().lower())
    if not match:
        return None
    power = " kmgt".index(match.group(2) or " ")
    return int(float(match.group(1)) * 1024**power)


def human_bytes(size: int) -> str:
    """HumanReadableNumBytes, e.g. 512.00MiB."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{value:.2f}{unit}"


def version_text() -> str:
    """absl --version: the config.version_string dfly_main.cc installs (green, then yellow)."""
    return f"dragonfly \033[0;32m{TAG}-{SHA}\033[m\nbuild time: \033[0;33m{BUILD_TIME}\033[m\n"


def validate_filename(name: str, dfs: bool) -> str:
    """detail::ValidateFilename: "" when fine, else the error text the real one logs."""
    if not name:
        return ""
    if name.startswith('"'):
        return (
            "filename should not start with '\"', could it be that you put quotes in the flagfile?"
        )
    if "/" in name:
        return (
            f'filename may not contain directory separators (Got "{name}"). dbfilename should '
            "specify the filename without the directory"
        )
    ext = os.path.splitext(name)[1]
    if not ext:
        return ""
    if dfs:
        if ext.lower() == ".rdb":
            return (
                "DF snapshot format is used but '.rdb' extension was given. Use "
                "--nodf_snapshot_format or remove the filename extension."
            )
        return f'DF snapshot format requires no filename extension. Got "{ext}"'
    if ext.lower() != ".rdb":
        return f'Bad filename extension "{ext}" for SAVE with type RDB'
    return ""


def substitute(name: str, pattern: bool = False) -> str:
    """SubstituteFilenamePlaceholders: {timestamp}, {Y}, {m}, {d} (or globs for loading)."""
    if pattern:
        return re.sub(r"\{(timestamp|Y|m|d)\}", "*", name)
    now = time.localtime()
    return (
        name.replace("{timestamp}", time.strftime("%Y-%m-%dT%H:%M:%S", now))
        .replace("{Y}", time.strftime("%Y", now))
        .replace("{m}", time.strftime("%m", now))
        .replace("{d}", time.strftime("%d", now))
    )


class Dragonfly:
    def __init__(self, values: dict[str, str], log: absl.Logger, threads: int) -> None:
        self.values = values
        self.log = log
        self.threads = threads
        self.dir = Path(values["dir"] or ".").resolve()
        self.dbfilename = values["dbfilename"]
        self.dfs = absl.parse_bool(values["df_snapshot_format"]) is not False
        self.save_on_shutdown = True
        self.save_seconds = float(CONFIG.get("save_seconds", 0))
        password = values["requirepass"] or os.environ.get("DFLY_PASSWORD", "")
        self.engine = Engine(password, self.server_info)
        self.engine.hello_fields = self.hello_fields
        self.engine.extra[b"SHUTDOWN"] = self.cmd_shutdown
        self.engine.extra[b"SAVE"] = self.cmd_save
        self.engine.extra[b"BGSAVE"] = self.cmd_save
        self.engine.extra[b"CONFIG"] = self.cmd_config
        self.writers: set[asyncio.StreamWriter] = set()
        self.pending = ""  # a snapshot still to load in the background
        self.stopping: asyncio.Event | None = None

    # -- what clients see ----------------------------------------------------------------------
    def server_info(self) -> dict[str, str]:
        return {
            "redis_version": REDIS_VERSION,
            "dragonfly_version": f"df-{TAG}",
            "redis_mode": "standalone",
            "arch_bits": "64",
            "os": os.uname().sysname + " " + os.uname().release,
            "thread_count": str(self.threads),
            "tcp_port": self.values["port"],
            "process_id": str(os.getpid()),
        }

    def hello_fields(self) -> dict[str, Any]:
        return {
            "server": "redis",
            "version": REDIS_VERSION,
            "dragonfly_version": f"df-{TAG}",
            "proto": 2,
            "id": 1,
            "mode": "standalone",
            "role": "master",
        }

    def cmd_config(self, client: Client, args: list[bytes]) -> Any:
        if args and args[0].upper() == b"GET" and len(args) == 2:
            name = args[1].decode()
            if name in ("dir", "dbfilename"):
                return [
                    name.encode(),
                    (str(self.dir) if name == "dir" else self.dbfilename).encode(),
                ]
            return []
        return Error("ERR CONFIG subcommand not supported by this stand-in")

    async def cmd_save(self, client: Client, args: list[bytes]) -> Any:
        error = await self.save()
        return Error(f"ERR {error}") if error else OK

    async def cmd_shutdown(self, client: Client, args: list[bytes]) -> Any:
        """ShutdownCmd: SAVE|SAFE, NOSAVE, NOW, FORCE, ABORT (case-insensitive)."""
        words = {a.upper() for a in args}
        if words - {b"SAVE", b"SAFE", b"NOSAVE", b"NOW", b"FORCE", b"ABORT"}:
            return Error("ERR syntax error")
        save = bool(words & {b"SAVE", b"SAFE"})
        if save and b"NOSAVE" in words:
            return Error("ERR syntax error")
        if b"ABORT" in words:
            return Error("ERR SHUTDOWN ABORT is not supported")
        if b"FORCE" in words or b"NOSAVE" in words:
            self.save_on_shutdown = False
        elif save:
            self.save_on_shutdown = True
        assert self.stopping is not None
        # The reply goes out first (SendOk follows acceptor->Stop(), which only starts the
        # stop); the snapshot is written afterwards, in Shutdown(), once the loop has ended.
        asyncio.get_running_loop().call_soon(self.stopping.set)
        return OK

    # -- snapshots -----------------------------------------------------------------------------
    async def save(self) -> str:
        """SaveStagesController for the DF format: summary + one file per shard, .tmp first."""
        if not self.dbfilename:
            return "filename is not specified"
        error = validate_filename(self.dbfilename, self.dfs)
        if error:
            return error
        self.dir.mkdir(parents=True, exist_ok=True)
        base = self.dir / substitute(self.dbfilename)
        started = time.monotonic()
        records = self.engine.ks.records()
        if not self.dfs:
            final = base if base.suffix else base.with_name(base.name + ".rdb")
            parts = [(final, records)]
        else:
            shards: list[list[dict[str, Any]]] = [[] for _ in range(self.threads)]
            for record in records:
                shards[int(record["k"][:8] or "0", 16) % self.threads].append(record)
            parts = [(base.with_name(f"{base.name}-summary.dfs"), [])]
            parts += [
                (base.with_name(f"{base.name}-{sid:04d}.dfs"), s) for sid, s in enumerate(shards)
            ]
        snapshot_id = secrets.token_hex(16)
        temps = []
        for final, part in parts:
            temp = final.with_name(final.name + ".tmp")
            temps.append((temp, final))
            body = json.dumps({"snapshot_id": snapshot_id, "shards": self.threads, "keys": part})
            with open(temp, "w", encoding="utf-8") as handle:
                # A slow save writes in pieces, so the files visibly grow in --dir meanwhile.
                pieces = 20 if self.save_seconds else 1
                step = max(1, len(body) // pieces + 1)
                for offset in range(0, len(body), step):
                    handle.write(body[offset : offset + step])
                    handle.flush()
                    if self.save_seconds:
                        await asyncio.sleep(self.save_seconds / pieces / len(parts))
        for temp, final in temps:
            os.replace(temp, final)
        shown = parts[0][0]
        self.log.log(
            "I",
            "save_stages_controller.cc:360",
            f'Saving "{shown}" finished after {int(time.monotonic() - started)} s',
        )
        return ""

    def find_snapshot(self) -> list[str]:
        """LoadPath: the newest ``<name>*`` ending in summary.dfs or .rdb, with its shard files
        ([] when there is none; None-like errors are logged by load)."""
        exact = self.dir / self.dbfilename
        if exact.is_file():
            return [str(exact)]
        pattern = substitute(str(exact), pattern=True)
        if not os.path.splitext(pattern)[1]:
            pattern += "*"
        found = [p for p in glob.glob(pattern) if p.endswith((".rdb", "summary.dfs"))]
        return sorted(found, key=os.path.getmtime)[-1:]

    async def load_in_background(self, path: str) -> None:
        """Dragonfly loads in a fiber while it already accepts connections; until it is done,
        commands without the LOADING option (PING, GET, SET...) answer -LOADING, even before
        AUTH (main_service.cc checks the global state first). A failed load exits 1."""
        allowed = {b"AUTH", b"INFO", b"HELLO", b"SHUTDOWN", b"QUIT", b"CONFIG"}
        loading = Error("LOADING Dragonfly is loading the dataset in memory")
        self.engine.state_check = lambda name: None if name in allowed else loading
        await asyncio.sleep(float(CONFIG.get("load_seconds", 0)))
        if not self.load_files(path):
            os._exit(1)
        self.engine.state_check = lambda name: None

    def load(self) -> bool:
        """LoadFromSnapshot, done at once (False = exit 1) unless the stand-in is told that
        loading takes a while (``load_seconds``): then run() does it in the background."""
        if not self.dbfilename:
            return True
        self.log.log(
            "I",
            "snapshot_storage.cc:327",
            f"Load snapshot: Searching for snapshot in directory: {self.dir}",
        )
        candidates = self.find_snapshot()
        if not candidates:
            self.log.log("W", "server_family.cc:1331", "Load snapshot: No snapshot found")
            return True
        self.pending = candidates[0]
        return True if CONFIG.get("load_seconds") else self.load_files(self.pending)

    def load_files(self, path: str) -> bool:
        self.log.log("I", "server_family.cc:1486", f"Loading {path}")
        files = [path]
        if path.endswith("summary.dfs"):
            shard_files = sorted(glob.glob(path.replace("summary", "????")))
            if not shard_files:
                self.log.log("E", "server_family.cc:1490", "Cound not find DFS shard files")
                return False
            files += shard_files
        ids = set()
        try:
            for name in files:
                data = json.loads(Path(name).read_text(encoding="utf-8"))
                ids.add(data["snapshot_id"])
                self.engine.ks.load(data["keys"])
        except (OSError, ValueError, KeyError) as exc:
            self.log.log("E", "server_family.cc:1500", f"Error loading {path}: {exc}")
            return False
        if len(ids) != 1:  # GUESS: shard files from another snapshot are an error
            self.log.log(
                "E", "server_family.cc:1500", f"Error loading {path}: snapshot id mismatch"
            )
            return False
        return True

    # -- serving -------------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            await self.engine.serve_client(reader, writer)
        finally:
            self.writers.discard(writer)

    async def run(self) -> int:
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        host = self.values["bind"] or None
        port = int(self.values["port"])
        try:
            server = await asyncio.start_server(self.handle, host, port, reuse_address=True)
        except OSError as exc:
            self.log.log(
                "E", "dfly_main.cc:448", f"Could not open port {port}, error: {exc.strerror}"
            )
            return 1
        sock = server.sockets[0]
        address, bound = sock.getsockname()[:2]
        self.log.log(
            "I",
            "listener_interface.cc:102",
            f"sock[{sock.fileno()}] AcceptServer - listening on {address}:{bound}",
        )
        if self.pending and CONFIG.get("load_seconds"):
            loader = asyncio.create_task(self.load_in_background(self.pending))
        await self.stopping.wait()
        if self.pending and CONFIG.get("load_seconds"):
            await loader  # Shutdown() joins the load fiber before it saves
        server.close()  # acceptor->Stop(): no new connections ...
        for writer in list(self.writers):  # ... and the open ones are closed
            writer.close()
        await asyncio.sleep(0)
        if self.save_on_shutdown and self.dbfilename:
            error = await self.save()
            if error:
                self.log.log("W", "server_family.cc:1365", f"Failed to perform snapshot {error}")
        return 0

    def _on_signal(self, signum: int) -> None:
        self.log.log("I", "accept_server.cc:60", f"Exiting on signal {signal.strsignal(signum)}")
        assert self.stopping is not None
        self.stopping.set()


def from_env(parsed: absl.Parsed, log: absl.Logger) -> None:
    """ParseFlagsFromEnv: DFLY_<flag> sets a flag not given on the command line; any other
    DFLY_ variable (DFLY_DEV_ENV aside) is fatal."""
    for key, value in os.environ.items():
        if not key.startswith("DFLY_"):
            continue
        name = key[len("DFLY_") :]
        if name == "DEV_ENV":
            continue
        if name not in FLAGS:
            log.fatal("dfly_main.cc:1060", f"unknown environment variable DFLY_{name}")
        if name in parsed.on_command_line:
            continue
        if FLAGS[name] and absl.parse_bool(value) is None:
            log.fatal(
                "dfly_main.cc:1055",
                f"could not parse flag {name} from environment variable. Error: "
                f"Illegal value '{value}' specified for flag '{name}'",
            )
        parsed.values[name] = value


def main(argv: list[str]) -> int:
    parsed = absl.parse_args(argv[1:], FLAGS)
    values = {**DEFAULTS, **parsed.values}
    if parsed.values.get("version") == "true":
        sys.stdout.write(version_text())
        return 0
    if parsed.values.get("help") == "true" or parsed.values.get("helpfull") == "true":
        sys.stdout.write("dragonfly: a modern in-memory store.\n\nUsage: dragonfly [FLAGS]\n")
        return 1  # GUESS: absl exits 1 after --help
    program = os.path.basename(argv[0])
    flag = absl.parse_bool
    log = absl.Logger(
        program,
        to_stderr=flag(values["logtostderr"]) is True,
        also_stderr=flag(values["alsologtostderr"]) is True,
        log_dir=values["log_dir"],
        threshold=int(values["stderrthreshold"]),
    )
    log.log("I", "init.cc:145", f"{argv[0]} running in opt mode.")
    from_env(parsed, log)
    values = {**DEFAULTS, **parsed.values}
    if flag(values["omit_basic_usage"]) is not True:
        where = f"{log.base_dir}dragonfly.*\n" if log.base_dir else ""
        sys.stdout.write(
            "* Logs will be written to the first available of the following paths:\n"
            f"{where}* For the available flags type dragonfly [--help | --helpfull]\n"
            "* Documentation can be found at: https://www.dragonflydb.io/docs\n"
        )
        sys.stdout.flush()
    log.log("I", "dfly_main.cc:1106", f"Starting dragonfly df-{TAG}-{SHA}")
    error = validate_filename(values["dbfilename"], flag(values["df_snapshot_format"]) is not False)
    if error:
        log.log("E", "server_family.cc:1031", error)
        return 1
    for name in ("port", "proactor_threads"):
        if not values[name].isdigit():
            absl.usage_error(f"Illegal value '{values[name]}' specified for flag '{name}'")
            return 1
    maxmemory = memory_bytes(values["maxmemory"])
    if maxmemory is None:
        absl.usage_error(f"Illegal value '{values['maxmemory']}' specified for flag 'maxmemory'")
        return 1
    pidfile = values["pidfile"]
    if pidfile:
        try:
            Path(pidfile).write_text(f"{os.getpid()}\n", encoding="utf-8")
        except OSError as exc:
            log.log(
                "E",
                "dfly_main.cc:497",
                f"Failed to open pidfile with error: {exc.strerror}. Exiting...",
            )
            return 1
    try:
        threads = int(values["proactor_threads"]) or min(os.cpu_count() or 1, 2)
        if maxmemory == 0:
            log.log(
                "I", "dfly_main.cc:1169", "maxmemory has not been specified. Deciding myself...."
            )
            maxmemory = 4096 * MIB  # GUESS: 80% of MemAvailable in the real one
        else:
            log.log("I", "dfly_main.cc:1186", f"Max memory limit is: {human_bytes(maxmemory)}")
        if maxmemory < threads * 256 * MIB:
            log.log(
                "E",
                "dfly_main.cc:321",
                f"There are {threads} threads, so {human_bytes(threads * 256 * MIB)} are required. "
                "Exiting...",
            )
            return 1
        server = Dragonfly(values, log, threads)
        if not server.load():
            return 1
        return asyncio.run(server.run())
    finally:
        if pidfile:
            Path(pidfile).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main([globals().get("STANDIN_ARGV0") or sys.argv[0], *sys.argv[1:]]))
