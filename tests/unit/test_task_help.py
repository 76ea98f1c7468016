"""`invoke --help TASK` documents every option of every task (a new user's first stop)."""

from __future__ import annotations

import importlib
import sys

import pytest
from invoke.tasks import Task

from devserver.cli import tasks


def _tasks() -> dict[str, Task]:  # type: ignore[type-arg]
    """Fresh task objects: Invoke's get_arguments() consumes a task's help mapping."""
    modules = [importlib.reload(group) for group in tasks.GROUPS]
    return {t.name: t for m in modules for t in vars(m).values() if isinstance(t, Task)}


def test_every_option_of_every_task_has_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["invoke", "--help"])
    found = _tasks()
    assert {"start", "stop", "status", "verify", "up", "down", "cli", "run", "reset"} <= set(found)
    missing = [
        f"{name} --{arg.name}"
        for name, t in sorted(found.items())
        for arg in t.get_arguments()
        if not (arg.help or "").strip()
    ]
    assert missing == []


def test_verify_json_help_names_every_key_of_the_object(monkeypatch: pytest.MonkeyPatch) -> None:
    # The help listed (ok, url, checks, latency_ms) while the object also has warnings.
    monkeypatch.setattr(sys, "argv", ["invoke", "--help", "verify"])
    (json_arg,) = [a for a in _tasks()["verify"].get_arguments() if a.name == "json"]
    for key in ("ok", "url", "checks", "latency_ms", "warnings"):
        assert key in json_arg.help


def test_the_packaged_collection_has_no_task_of_this_repository_only() -> None:
    # A user's project got `test` and `bench`, which need this repository's tests/ and
    # benchmarks/ ("No module named pytest"; "benchmarks/: not found in this project").
    from devserver.tasks import ns

    assert "start" in ns.task_names
    assert not {"test", "bench"} & set(ns.task_names)


def test_this_repositorys_tasks_add_test_and_bench_with_help(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "argv", ["invoke", "--help"])
    root_tasks = importlib.import_module("tasks")
    from devserver.tasks import ns

    assert set(root_tasks.ns.task_names) == {*ns.task_names, "test", "bench"}
    for name in ("test", "bench"):
        task = root_tasks.ns[name]
        assert all((arg.help or "").strip() for arg in task.get_arguments()), name


def test_short_flags_only_where_usual(monkeypatch: pytest.MonkeyPatch) -> None:
    # Invoke's automatic ones surprised: `fetch -o` was --force, `-l` --allow-unverified,
    # `start -o` --foreground, and `-f` meant the flavor for start but follow for tail.
    monkeypatch.setattr(sys, "argv", ["invoke", "--help"])
    root_tasks = importlib.import_module("tasks")
    short = {
        f"{name} -{flag}"
        for name in root_tasks.ns.task_names
        for arg in root_tasks.ns[name].get_arguments()
        for flag in arg.names
        if len(flag) == 1
    }
    assert short == {"tail -f", "tail -n"}
