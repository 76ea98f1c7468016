"""From a resolved plan to bin/: obtain the archive, check its sha256, unpack it in a work
folder, and move the executable into ``bin/`` so that bin/ is either all old or all new.

Everything is staged first (inside bin/ under dot-names, so the final step is a same-directory
rename), then swapped in with ``os.replace``, executable first and manifest last. If any step
fails, the swaps already made are undone and the staged files removed: a failed fetch leaves
bin/ exactly as it was.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from devserver.config import Settings
from devserver.errors import ChecksumError, FetchError
from devserver.fetch import binaries
from devserver.fetch.dotnet import dotnet_majors, pick_dotnet_build
from devserver.fetch.manifest import new_record
from devserver.fetch.options import Bar, FetchOptions, FetchResult, Reporter, policy
from devserver.fetch.resolve import Plan
from devserver.fetch.unpack import extract
from devserver.system import host
from devserver.system.atomic import check_writable
from devserver.system.files import retry_sharing

# Windows refuses to rename a folder while a file in it is open, and an antivirus scanner
# opens a new executable right after it first ran (our version probe): rustup retries such
# renames for about 28 s (rust-lang/rustup#1873). POSIX never refuses: one try.
RENAME_RETRY = 15.0


def probe_writable(bin_dir: Path) -> None:
    """Fail before downloading when bin/ (or the folder that will hold it) is not writable."""
    where = bin_dir if bin_dir.is_dir() else bin_dir.parent
    try:
        check_writable(where)
    except OSError as exc:
        raise FetchError(
            f"cannot write to {where}: {exc.strerror or exc}",
            hint="fix its permissions or set server.bin_dir elsewhere",
        ) from None


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _move(source: Path, target: Path) -> None:
    """Rename, retrying while Windows refuses (see RENAME_RETRY); copy only when the rename
    cannot work at all (another file system). Not shutil.move alone: it answers a refused
    rename by copying, which a file held open then fails halfway."""
    try:
        retry_sharing(functools.partial(os.replace, source, target), RENAME_RETRY)
    except PermissionError:
        raise
    except OSError:
        shutil.move(str(source), str(target))


def install(
    bin_dir: Path, items: list[tuple[Path, str]], manifest_name: str, manifest: dict[str, Any]
) -> None:
    """Put each (source, name under bin/) in place, then the manifest, all or nothing.

    ``source`` is a file or folder in the work directory; it is moved (not copied) when it is
    on the same file system, so installing a large binary costs a rename.
    """
    created = not bin_dir.exists()
    token = secrets.token_hex(4)
    staged: list[tuple[Path, Path]] = []
    swapped: list[tuple[Path, Path | None]] = []
    try:
        bin_dir.mkdir(parents=True, exist_ok=True)
        for source, name in items:
            temp = bin_dir / f".{name}.new-{token}"
            _move(source, temp)
            staged.append((temp, bin_dir / name))
        temp_manifest = bin_dir / f".{manifest_name}.new-{token}"
        staged.append((temp_manifest, bin_dir / manifest_name))
        write_json(temp_manifest, manifest)
        for temp, final in staged:
            backup = None
            if final.exists() or final.is_symlink():
                backup = final.with_name(f".{final.name}.old-{token}")
                retry_sharing(functools.partial(os.replace, final, backup), RENAME_RETRY)
            swapped.append((final, backup))
            retry_sharing(functools.partial(os.replace, temp, final), RENAME_RETRY)
    except BaseException as exc:
        # Undo in reverse: whatever sits at ``final`` now is new (the old one is in backup).
        for final, backup in reversed(swapped):
            _remove(final)
            if backup is not None:
                os.replace(backup, final)
        for temp, _ in staged:
            _remove(temp)
        if created:
            shutil.rmtree(bin_dir, ignore_errors=True)
        if isinstance(exc, OSError):
            raise FetchError(
                f"cannot install into {bin_dir}: {exc.strerror or exc}",
                hint="check free space and permissions of bin/; on Windows, stop "
                "a server running from bin/ first (`invoke stop`); an antivirus scanner "
                "still holding the new files is the other usual cause: fetch again",
            ) from None
        raise
    for _, backup in swapped:
        if backup is not None:
            _remove(backup)


def sweep_stale_work(parent: Path) -> None:
    """Remove work folders left by a fetch that was killed outright (no cleanup could run).

    Each is named after its fetch's pid; one whose pid no longer runs is abandoned. A reused
    pid only means a stale folder survives until a later fetch, never that a live one goes.
    """
    # Imported here: psutil loads in tens of milliseconds, and only an install needs it.
    import psutil

    for path in parent.glob(".fetch-*-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and path.is_dir() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def install_release(
    settings: Settings, options: FetchOptions, reporter: Reporter, plan: Plan
) -> FetchResult:
    """Download (or read) the archive, verify, extract into a work dir, swap into bin/."""
    flavor, asset = plan.flavor, plan.asset
    if not plan.sha256 and not options.allow_unverified:
        raise ChecksumError(
            f"no sha256 is published or pinned for {plan.name}: refusing an unverified install",
            hint="pass --sha256 HEX from a trusted source, or --allow-unverified to accept it "
            "(the computed hash is then recorded in the manifest)",
        )
    majors = dotnet_majors(options.dotnet) if flavor.runtime == "dotnet" else set()
    if flavor.runtime == "dotnet" and not majors:
        raise FetchError(
            "Garnet needs a .NET runtime (8 or newer), and `dotnet` found none",
            hint="install the .NET 8 runtime: https://dotnet.microsoft.com/download",
        )
    probe_writable(settings.bin_dir)
    sweep_stale_work(settings.bin_dir.parent)
    try:
        settings.bin_dir.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".fetch-{os.getpid()}-"
        work = Path(tempfile.mkdtemp(prefix=prefix, dir=settings.bin_dir.parent))
    except OSError as exc:
        raise FetchError(
            f"cannot create a work directory in {settings.bin_dir.parent}: {exc.strerror or exc}",
            hint="fix its permissions",
        ) from None
    try:
        archive, digest = _obtain(plan, options, reporter, work)
        if plan.sha256 and digest != plan.sha256:
            raise ChecksumError(
                f"sha256 mismatch for {plan.name}: expected {plan.sha256}, got {digest}",
                hint="the download is corrupt or was tampered "
                "with; nothing was installed. Try again, or check --sha256",
            )
        if not plan.sha256:
            reporter.warn(
                f"UNVERIFIED: {plan.name} has no published sha256; installing it "
                f"anyway (--allow-unverified), sha256 {digest}"
            )
        tree = work / "x"
        tree.mkdir()
        hashes = extract(archive, tree, asset.member)
        base = host.exe_name(flavor.exe)
        found = [n for n in hashes if asset.pattern != "*" or n.rsplit("/", 1)[-1] == base]
        if not found:
            raise FetchError(
                f"{plan.name} holds no {flavor.title} executable (looked for {asset.member})",
                hint="is this the right archive for this flavor and platform?",
            )
        member = pick_dotnet_build(found, majors) if majors else min(found, key=len)
        return _place(settings, plan, tree, member, hashes[member], digest)
    except OSError as exc:  # reading --archive, chmod, ...: environmental, not a bug report
        raise FetchError(
            f"fetch failed: {exc.strerror or exc} ({exc.filename or plan.name})",
            hint="check permissions and free space",
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _obtain(plan: Plan, options: FetchOptions, reporter: Reporter, work: Path) -> tuple[Path, str]:
    """The archive on disk and its sha256 (hashed while downloading, or read once if local)."""
    if plan.archive is not None:
        hasher = hashlib.sha256()
        with open(plan.archive, "rb") as handle:
            while chunk := handle.read(1024 * 1024):
                hasher.update(chunk)
        return plan.archive, hasher.hexdigest()
    # Imported here: download.py imports requests, which only a real download needs.
    from devserver.fetch import download

    target = work / "archive"
    bars: list[Bar] = []

    def on_progress(done: int, total: int | None) -> None:
        if not bars:
            bars.append(reporter.progress(f"downloading {plan.name}", total))
        bars[0].update(done)

    reporter.info(f"downloading {plan.url}")
    try:
        digest, _ = download.download(
            download.new_session(), plan.url, target, policy(options), on_progress
        )
    finally:
        for bar in bars:
            bar.close()
    return target, digest


def _place(
    settings: Settings, plan: Plan, tree: Path, member: str, exe_sha: str, archive_sha: str
) -> FetchResult:
    """Make the chosen executable runnable, record what it is, and swap it into bin/."""
    flavor, asset = plan.flavor, plan.asset
    exe = tree.joinpath(*member.split("/"))
    exe.chmod(0o755)  # Garnet's archives may lack the exec bit
    version = "" if asset.via_wsl else binaries.read_version(flavor, exe)
    # A direct --url/--archive of an asset whose name has no version (Dragonfly's
    # dragonfly-x86_64.tar.gz) would be "unknown": the binary's own answer is better.
    release = plan.version
    if release == binaries.UNKNOWN_VERSION and binaries.release_version(version):
        release = binaries.release_version(version)
    if asset.folder:
        folder = exe.parent
        items, rel = [(folder, flavor.name)], f"{flavor.name}/{exe.name}"
    else:
        rel = flavor.exe if asset.via_wsl else host.exe_name(flavor.exe)
        items = [(exe, rel)]
    manifest = new_record(plan, release, rel, version, archive_sha, exe_sha)
    install(settings.bin_dir, items, f"{flavor.name}.json", manifest)
    return FetchResult("installed", flavor.name, release, settings.bin_dir / rel, manifest, "bin")
