"""The BentoML service: retrieval and ranking in one deployable unit."""
