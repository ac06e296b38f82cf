"""The plain library of the platform: data contract, candidate generation, features, ranking, metrics.

Nothing here imports Prefect or BentoML; flows and the service call into this package.
"""
