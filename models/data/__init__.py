"""Data: the contract every dataset passes (columns, validation), loaders (contract files, MovieLens, the demo
catalog), saved tables, time helpers and the temporal splits of the evaluation protocol.

Imports: ``models.settings``, ``models.files`` and libraries only.
"""
