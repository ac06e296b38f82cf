"""Evaluation: ranking metrics and the paired bootstrap, stage-1 recall, and the offline evaluation of every method
through the service's own ``recommend``.

Imports: everything below it (``models.training`` and lower).
"""
