"""Talking to the person: the Invoke tasks, the console, the ``devserver`` program."""
