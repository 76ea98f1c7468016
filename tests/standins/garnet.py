"""A stand-in for GarnetServer (Microsoft Garnet), for tests only.

Derived from microsoft/garnet at e508a41620f12b01a534826fa83eecfd350db7dd (v2.1.4-24,
2026-08-21): main/GarnetServer/Program.cs (any start-up failure is caught, printed, and Main
returns: exit code 0), libs/host/GarnetServer.cs (the banner, "* Ready to accept
connections", Environment.Exit(0) on a parse failure asking for it), libs/host/
ServerSettingsManager.cs (CommandLineParser in getopt mode, the error text, options imported
from --config-import-path as JSON), libs/host/Configuration/Options.cs (the option names:
garnet_flags.txt), libs/host/defaults.conf (the JSON keys) and CmdStrings.cs (NOAUTH and
WRONGPASS texts). Nothing is copied.

Reproduced: --version (CommandLineParser's AutoVersion, exit 0); unknown options and a
missing --config-import-path file fail start-up with exit code 0; the password only from
the imported JSON (``AuthenticationMode: Password``); no SHUTDOWN command
(api-compatibility.md lists it unsupported); SAVE writes a checkpoint under --checkpointdir,
which the next start reads only with --recover; nothing is saved on SIGTERM or a kill (no
AOF unless --aof, which this stand-in does not implement).

Guessed (the source does not settle it here): the checkpoint files' layout and content
(``Store/checkpoints/cpr-checkpoints/<token>/``, JSON), that SIGTERM ends the process with
.NET's 143, and how the framework-dependent apphost finds its runtime: this stand-in asks the
``dotnet`` on PATH (``--list-runtimes``) and, as the real apphost does when the runtime is
missing, prints "You must install or update .NET" and exits 150.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from respcore import OK, Client, Engine

CONFIG: dict[str, Any] = globals().get("STANDIN_CONFIG") or {}
VERSION = str(CONFIG.get("version", "2.1.4"))
FRAMEWORK = int(CONFIG.get("framework", 8))  # the netN.0 folder this build came from
OPTIONS = {
    line.strip()
    for line in Path(__file__).with_name("garnet_flags.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}
FAILED = (
    "Unable to initialize server due to exception: Encountered an error when initializing "
    "Garnet server. Please see log messages above for more details."
)


def runtime_present() -> bool:
    try:
        out = subprocess.run(
            ["dotnet", "--list-runtimes"], capture_output=True, text=True, timeout=10
        )
    except OSError:
        return False
    return bool(re.search(rf"^Microsoft\.NETCore\.App {FRAMEWORK}\.", out.stdout, re.M))


def parse(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """getopt-style long options: --name value, --name=value; a bare --name is a switch
    (ConsolidateFlagArguments adds "true"). Returns (values, unknown names)."""
    values: dict[str, str] = {}
    unknown: list[str] = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            unknown.append(arg)
            continue
        name, has_value, value = arg[2:].partition("=")
        if name not in OPTIONS:
            unknown.append(name)
            continue
        if not has_value:
            value = args.pop(0) if args and not args[0].startswith("-") else "true"
        values[name] = value
    return values, unknown


class Garnet:
    def __init__(self, values: dict[str, str], password: str) -> None:
        self.values = values
        self.checkpoints = Path(values.get("checkpointdir") or values.get("logdir") or ".")
        self.engine = Engine(password, self.server_info)
        self.engine.noauth = "NOAUTH Authentication required."
        self.engine.wrongpass = "WRONGPASS Invalid password"
        self.engine.unknown = "ERR unknown command"
        self.engine.hello_fields = lambda: {
            "server": "redis",
            "version": "7.4.3",
            "proto": 2,
            "id": 1,
            "mode": "standalone",
            "role": "master",
            "modules": [],
        }
        self.engine.extra[b"SAVE"] = self.cmd_save
        self.engine.extra[b"BGSAVE"] = self.cmd_save

    def server_info(self) -> dict[str, str]:
        return {
            "redis_version": "7.4.3",
            "garnet_version": VERSION,
            "os": os.uname().sysname,
            "process_id": str(os.getpid()),
            "tcp_port": self.values.get("port", "6379"),
        }

    def _store(self) -> Path:
        return self.checkpoints / "Store" / "checkpoints"

    def cmd_save(self, client: Client, args: list[bytes]) -> Any:
        token = secrets.token_hex(16)
        folder = self._store() / "cpr-checkpoints" / token
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "snapshot.dat").write_text(json.dumps(self.engine.ks.records()), encoding="utf-8")
        index = self._store() / "index-checkpoints" / token
        index.mkdir(parents=True, exist_ok=True)
        (index / "info.dat").write_text(token, encoding="utf-8")
        return OK

    def recover(self) -> None:
        tokens = sorted(
            (self._store() / "cpr-checkpoints").glob("*/snapshot.dat"), key=os.path.getmtime
        )
        if tokens:
            self.engine.ks.load(json.loads(tokens[-1].read_text(encoding="utf-8")))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: os._exit(143))
        loop.add_signal_handler(signal.SIGINT, lambda: os._exit(130))
        host = self.values.get("bind") or None
        port = int(self.values.get("port", "6379"))
        try:
            server = await asyncio.start_server(
                self.engine.serve_client, host, port, reuse_address=True
            )
        except OSError as exc:
            print(f"Unable to initialize server due to exception: {exc.strerror}", flush=True)
            return 0
        red, magenta, normal = "\033[31m", "\033[35m", "\033[0m"
        print(
            f"{red}    _________\n"
            f"   /_||___||_\\      {normal}Garnet {VERSION} 64 bit; standalone mode{red}\n"
            f"   '. \\   / .'      {normal}Listening on: {host or '0.0.0.0'}:{port}{red}\n"
            f"     '.\\ /.'        {magenta}https://aka.ms/GetGarnet{red}\n"
            f"       '.'\n{normal}\n",
            flush=True,
        )
        print("* Ready to accept connections", flush=True)
        async with server:
            await server.serve_forever()
        return 0


def main(argv: list[str]) -> int:
    if not runtime_present():
        sys.stderr.write(
            "You must install or update .NET to run this application.\n\n"
            f"App: {argv[0]}\nArchitecture: x64\n"
            f"Framework: 'Microsoft.NETCore.App', version '{FRAMEWORK}.0.0' (x64)\n"
        )
        return 150
    if "--version" in argv[1:]:
        # CommandLineParser's AutoVersion: its heading (assembly name and informational
        # version). GUESS at the exact text: "GarnetServer <version>+<commit>", then exit 0.
        print(f"GarnetServer {VERSION}+e508a41620f12b01a534826fa83eecfd350db7dd")
        return 0
    values, unknown = parse(argv[1:])
    if unknown:
        print("GarnetServer\nCopyright (c) Microsoft Corporation\n\nERROR(S):")
        for name in unknown:
            print(f"  Option '{name}' is unknown.")
        print("\nEncountered error(s) while parsing command line arguments.")
        print("For detailed usage information run with --help.\n")
        print(FAILED, flush=True)
        return 0
    password = ""
    if "config-import-path" in values:
        try:
            imported = json.loads(Path(values["config-import-path"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            print(f"Unable to initialize server due to exception: {exc}", flush=True)
            return 0
        if str(imported.get("AuthenticationMode", "NoAuth")).lower() == "password":
            password = str(imported.get("Password") or "")
        for key, option in (
            ("Port", "port"),
            ("Address", "bind"),
            ("CheckpointDir", "checkpointdir"),
        ):
            if imported.get(key) is not None and option not in values:
                values[option] = str(imported[key])
    if values.get("auth", "").lower() == "password":
        password = values.get("password", password)
    garnet = Garnet(values, password)
    if values.get("recover", "false").lower() == "true":
        garnet.recover()
    return asyncio.run(garnet.run())


if __name__ == "__main__":
    sys.exit(main([globals().get("STANDIN_ARGV0") or sys.argv[0], *sys.argv[1:]]))
