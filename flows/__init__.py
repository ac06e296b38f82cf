"""Prefect flows of the pipeline; each task is a thin wrapper over a function in ``models``."""
