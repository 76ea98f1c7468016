#!/bin/sh
# start_dev.sh: one command for a Linux/macOS developer, the counterpart of start_dev.bat.
# Run it from any folder. It prepares Python (.venv + requirements), then runs
#   invoke fetch, invoke start, invoke verify   (stopping at the first failure)
# and finally what `invoke up` runs for the application (api.command plus app.processes or a
# Procfile: `invoke up --no-fetch --no-verify`, those two steps being done), whose exit code
# it returns.
#
# DEV_PYTHON=/path/to/python (or any wrapper): use that interpreter for every step as-is;
# no venv is created and nothing is installed. The tests use it with a stub and with a
# ready-made venv.
#
# POSIX sh on purpose (dash, bash, busybox ash, macOS sh): no bash-isms, shellcheck-clean.

set -u

# Work from the script's own folder (the path may contain spaces).
caller=$PWD
here=$(dirname -- "$0")
cd -- "$here" || { echo "error: cannot change to the script's folder $here" >&2; exit 1; }

fail() {
    printf 'error: %s\n' "$1" >&2
    [ -n "${2:-}" ] && printf 'hint: %s\n' "$2" >&2
    exit 1
}

# A Python that runs and is new enough (the project needs 3.10+).
python_ok() {
    "$1" -c 'import sys; sys.exit(sys.version_info < (3, 10))' >/dev/null 2>&1
}

if [ -n "${DEV_PYTHON:-}" ]; then
    PY=$DEV_PYTHON
    echo "Using DEV_PYTHON as-is (no venv, no install): $PY"
else
    PY=$PWD/.venv/bin/python
    stamp=$PWD/.venv/requirements.installed.txt
    if [ -e "$PY" ] && ! "$PY" -c 'import sys' >/dev/null 2>&1; then
        echo "The virtual environment in .venv is broken (its python does not start): recreating it."
        rm -rf .venv || fail "could not delete the broken .venv folder" "delete it by hand and run $0 again"
    fi
    if [ ! -e "$PY" ]; then
        base=
        for candidate in python3 python; do
            if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
                base=$candidate
                break
            fi
        done
        [ -n "$base" ] || fail "Python 3.10 or newer was not found (tried python3 and python)" \
            "install it from https://www.python.org/downloads/ or your package manager (e.g. apt install python3 python3-venv, brew install python), or set DEV_PYTHON"
        echo "Creating the virtual environment in .venv with $(command -v "$base") ..."
        "$base" -m venv .venv || { rm -rf .venv; fail "creating the virtual environment in .venv failed" \
            "on Debian/Ubuntu install the venv module: apt install python3-venv"; }
        [ -e "$PY" ] || fail "the new .venv has no bin/python" "remove .venv and try again"
    fi
    # Install only when requirements.txt changed since the last successful install: the stamp
    # is a copy of the file as it was then. Without a stamp (a venv made by hand, e.g. the
    # README's `pip install -r requirements-dev.txt`), check what is installed first: pip is
    # slow and noisy for nothing when every pinned version is already there.
    if [ -f "$stamp" ] && cmp -s requirements.txt "$stamp"; then
        echo "Requirements unchanged since the last install."
    elif [ ! -f "$stamp" ] &&
        [ "$("$PY" -m devserver.requirements_check requirements.txt 2>/dev/null)" = satisfied ]; then
        echo "Requirements already installed in .venv (every pinned version is there)."
        cp requirements.txt "$stamp"
    else
        echo "Installing requirements (requirements.txt changed or never installed) ..."
        "$PY" -m pip install --disable-pip-version-check -r requirements.txt ||
            fail "installing the requirements failed (see pip's output above)" \
                "check the network or proxy (HTTPS_PROXY), then run $0 again"
        cp requirements.txt "$stamp"
    fi
fi

# Each step separately so a failure names its step; fetch makes no network call when a
# binary is already installed, so this works offline after the first run.
for step in fetch start verify; do
    printf '\n==> invoke %s\n' "$step"
    "$PY" -m invoke "$step" || fail "the $step step failed, so the application was not started" \
        "see the server log with: $PY -m invoke tail   (and -f to follow it)"
done

# `invoke` is not on PATH unless the venv is activated: say how to reach it from here on.
# Invoke finds tasks.py from the current folder, so a caller elsewhere must cd here first.
go=
if [ "$PWD" != "$caller" ]; then
    go="cd '$(printf '%s' "$PWD" | sed "s/'/'\\\\''/g")' && "
fi
if [ -n "${DEV_PYTHON:-}" ]; then
    printf '\nThe server is running. Run the tasks yourself with: %s%s -m invoke status (or tail -f, stop)\n' "$go" "$PY"
else
    printf '\nThe server is running. To use invoke yourself: %s. .venv/bin/activate, then invoke status\n' "$go"
    printf '(or without activating: %s.venv/bin/invoke status, and the same for tail -f, down, --list)\n' "$go"
fi

printf '\n==> invoke up --no-fetch --no-verify: the application (Ctrl+C stops it; the server keeps running: invoke down stops both)\n'
# exec: the application's exit code is the script's, and Ctrl+C reaches `up` with no shell
# in between. The same processes `invoke up` runs, recorded for `invoke down`.
exec "$PY" -m invoke up --no-fetch --no-verify
