"""devserver: fetch, run, check and stop a local Redis-compatible server.

The library never prints and never imports invoke: it returns values and raises
:class:`devserver.errors.DevServerError`; ``tasks.py`` and ``console.py`` talk to the person.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
