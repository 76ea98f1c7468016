"""The Invoke collection under its public name: a project's tasks.py says
``from devserver.tasks import ns``. The tasks themselves live in devserver/cli/tasks."""

from devserver.cli.tasks import ns

__all__ = ["ns"]
