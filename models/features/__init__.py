"""Features: the feature contract (names, order, vocabularies, Feast view and service names), point-in-time
snapshots of users and items, request-time assembly of the ranker's matrix, and the Feast store in code.

Imports: ``models.data``, ``models.files``, ``models.settings``. The Feast definitions themselves live in
``feature_repo/`` and are applied by the flows.
"""
