"""Benchmarks of the two-stage recommender: ``python -m bench.run`` (``make bench``).

Writes ``BENCHMARKS.md`` and ``bench.json`` under ``<state>/bench/``. Every section measures a figure and its
baseline in the same run, so that load from other jobs on the machine affects both alike.
"""
