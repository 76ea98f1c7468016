"""Between Invoke and the library: settings from Invoke's config, expected failures as one line
and an exit code, and the Task classes that parse what Invoke's defaults would get wrong."""

from __future__ import annotations

import functools
import os
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.config import Config
from invoke.context import Context
from invoke.exceptions import Exit, ParseError
from invoke.tasks import Task

from devserver.app.shellenv import words_after_dashdash
from devserver.cli import cliguard, console
from devserver.cli.redis_prompt import stray_word
from devserver.config import (
    Settings,
    fill_from_environment,
    load_settings,
    near_miss_sections,
    refuse_empty_variables,
)
from devserver.errors import DevServerError
from devserver.system import signals

F = TypeVar("F", bound=Callable[..., Any])


def _plain(value: Any) -> Any:
    """Invoke's DataProxy -> plain dicts, so the library sees ordinary Mappings."""
    if hasattr(value, "items") and not isinstance(value, (str, bytes)):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def project_root(ctx: Context) -> Path:
    """The user's project folder: bin/, data/, logs/ and .env are relative to it.

    For the ``invoke`` command it is the folder of the project's tasks.py (Invoke's loaded
    collection, which is also where Invoke read invoke.yaml); the ``devserver`` console script
    sets it to the current folder. Never this package's own folder, which may be a
    site-packages directory.
    """
    prefix = getattr(ctx.config, "_project_prefix", None)
    return Path(prefix) if prefix else Path.cwd()


def settings_from(ctx: Context, **overrides: Any) -> Settings:
    """Validated settings: invoke.yaml + environment + this task's options."""
    refuse_empty_variables(os.environ)
    _warn_near_miss_sections(ctx)
    config = {
        name: _plain(ctx.config.get(name) or {})
        for name in ("server", "release", "verify", "api", "app")
    }
    config = fill_from_environment(config, os.environ)  # keys no invoke.yaml has
    return load_settings(config, project_root(ctx)).with_overrides(**overrides)


_warned: set[str] = set()
# The expected failure `handled` reported last: `up` words its "up stopped" hint by it.
last_failure: list[DevServerError] = []


def _warn_near_miss_sections(ctx: Context) -> None:
    """``sever:`` in invoke.yaml: a warning naming both, once per command line."""
    free = Config.global_defaults()
    for given, meant in near_miss_sections([str(k) for k in ctx.config], free):
        if given not in _warned:
            _warned.add(given)
            console.warn(
                f"invoke.yaml: top-level section {given!r} is not one of the tool's: "
                f"did you mean {meant!r}?"
            )


def handled(func: F) -> F:
    """An expected failure becomes one line (plus hint) on stderr and exit 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DevServerError as exc:
            console.error(exc.message, exc.hint)
            last_failure[:] = [exc]
            raise Exit(code=1) from None
        except KeyboardInterrupt:
            # The task's own cleanup has run (start's is Ctrl+C-proof); from here on we only
            # exit, and another Ctrl+C must not turn that into a traceback.
            signals.ignore_interrupts()
            console.info("interrupted")
            raise Exit(code=130) from None
        except BrokenPipeError:  # `invoke verify | head -1`: the reader left before the end
            cliguard.reader_left()
            raise Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


_TAIL_SHORT_FLAGS = {"lines": "n", "follow": "f"}


class TailTask(Task[Callable[..., Any]]):
    """``-n`` for ``--lines`` and ``-f`` for ``--follow`` as in Unix tail.

    Invoke would give each option the first free letter of its name as a short flag
    (``--lines`` would get ``-l``); the collection turns that off for every task (see
    devserver/cli/tasks), and this class adds the two short flags everyone knows from tail.
    """

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        short = _TAIL_SHORT_FLAGS.get(name)
        opts["names"] = [opts["names"][0], *([short] if short else [])]
        return opts


def cli_words() -> tuple[bool, list[str] | None]:
    """(positional?, words after `--`): `invoke cli PING` takes one word as the command."""
    argv = sys.argv
    after = argv[argv.index("cli") + 1 :] if "cli" in argv else []
    positional = bool(after) and not after[0].startswith("-")
    return positional, words_after_dashdash(argv, ("cli",))


class CliTask(Task[Callable[..., Any]]):
    """``invoke cli PING``: the first word after ``cli`` is the command when one is given.

    Invoke's positional arguments are required, and an optional one cannot be declared; so
    ``command`` is made positional only when the command line has such a word (it is read
    from sys.argv when the parser is built). More words need ``--``, as for ``invoke run``.
    """

    # Every task name of the collection, set once the collection is built (devserver.cli.tasks):
    # a word after the command that names a task is the next task, not a stray word.
    task_names: tuple[str, ...] = ()

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Any]:
        self.positional = ["command"] if cli_words()[0] else []
        _refuse_stray_cli_words(self.task_names)
        return list(super().get_arguments(ignore_unknown_help))


def _refuse_stray_cli_words(task_names: tuple[str, ...]) -> None:
    """``invoke cli GET k``: say how to pass several words instead of "No idea what 'k' is!".

    Raised as Invoke's ParseError while the parser is built, so Invoke prints it as its own
    parse failure (one line + hint, exit 1) before it would trip over ``k``.
    """
    argv = sys.argv[1:]
    if "--" in argv:
        argv = argv[: argv.index("--")]  # words after `--` belong to the task before it
    if "cli" not in argv:
        return
    after = argv[argv.index("cli") + 1 :]
    word = stray_word(after, sorted(task_names))
    if word is not None:
        words = [w for w in after if not w.startswith("-")]
        plain = all(re.fullmatch(r"[\w.:*@%+=,/-]+", w) for w in words)
        quoted = f"   (or quote them: invoke cli '{' '.join(words)}')" if plain else ""
        raise ParseError(
            f"error: `invoke cli` takes the command as one word (Invoke would run {word!r} as "
            "the next task)\n"
            f"hint: put several words after --: invoke cli -- {shlex.join(words)}{quoted}"
        )
