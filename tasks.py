"""This project's tasks: the packaged collection, as in any project that uses devserver."""

from devserver.tasks import ns  # noqa: F401
