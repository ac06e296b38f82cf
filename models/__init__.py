"""The plain library of the platform; flows (Prefect) and the service (BentoML) call into it.

Packages, lowest first; a package imports only from the ones above it in this list (a test walks the imports):
- ``settings``, ``files``: the typed settings (every default lives there) and atomic file writes / checksums;
- ``data``: the data contract, loaders, the demo catalog, temporal splits;
- ``text``: item text encoders (MiniLM on torch or int8 ONNX) and the embedding cache;
- ``retrieval``: stage 1 — FAISS indexes, collaborative and graph models, popularity, sources, fusion;
- ``features``: point-in-time snapshots, the feature contract, request-time assembly, the Feast store;
- ``ranking``: the LightGBM re-ranker and the business rules;
- ``recommender``: the recommend path (retrieval policy, features, scoring, rules, explanations, similar items)
  and the published version it is loaded from;
- ``training``: the re-ranker's training set and training step;
- ``evaluation``: metrics, stage-1 recall, the offline evaluation of every method.

Nothing here imports Prefect, BentoML or MLflow.
"""
