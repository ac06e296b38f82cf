"""Retrieval (stage 1): FAISS indexes, collaborative (ALS) and graph (RP3beta) models, popularity, the candidate
sources, their fusion with provenance, and stage 1 assembled, saved and loaded.

Imports: ``models.data``, ``models.files``, ``models.settings``.
"""
