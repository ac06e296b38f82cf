"""Live updates between pipeline runs: the durable log of accepted interactions and item changes, and the overlay
that lays them over a loaded version's features and catalogue. Imports data, features, ranking, recommender."""
