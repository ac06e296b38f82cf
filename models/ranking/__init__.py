"""Ranking (stage 2): the LightGBM LambdaRank re-ranker and the business rules applied after scoring.

Imports: ``models.data``, ``models.files``, ``models.settings``.
"""
