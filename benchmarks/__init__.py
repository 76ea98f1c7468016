"""Benchmarks behind ``invoke bench``: each row is ours vs a baseline measured in the same run.

Not tests: nothing here asserts a timing. See ``benchmarks/run.py`` for the command line.
"""
