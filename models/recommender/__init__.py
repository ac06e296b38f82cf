"""The recommend path, the same offline and online: retrieval policy, feature assembly, scoring, rules,
explanations and similar items; plus the published version (versions, bundle) a service loads it from.

Imports: ``models.data``, ``models.text``, ``models.retrieval``, ``models.features``, ``models.ranking``.
"""
