"""Training: the re-ranker's training set (stage-1 candidates inside train, labels, point-in-time features through
Feast) and the LambdaRank training step.

Imports: everything below it (``models.recommender`` and lower).
"""
