"""Synthetic clustered unit vectors standing in for item text embeddings (what stage 1's ANN index holds).

Uniform random vectors on the sphere are the worst case for an inverted file (every list is as good as any other)
and unlike real embeddings; this generator gives the structure IVF relies on, with knobs kept fixed and documented:

- **Topics → clusters.** ``n_topics`` topic centres (uniform on the sphere, plus a shared offset so that unrelated
  items still have a small positive cosine, as sentence embeddings do). Each cluster centre is its topic centre
  plus a random direction of norm ``cluster_offset``, normalised, so clusters of one topic are close neighbours.
- **Zipf cluster sizes.** Cluster ``c`` (in a random order) gets a share ∝ 1 / (rank + 1) ** ``zipf``.
- **Low-rank within-cluster variation.** A point is its cluster centre + ``U_c · z`` (``U_c``: ``rank`` random
  orthonormal directions of that cluster; ``z`` Gaussian with standard deviations decaying as 1/√j, total norm
  ≈ ``spread`` × a per-cluster log-normal factor) + isotropic noise of norm ≈ ``noise``; then L2-normalised.
- **Queries** are fresh draws from the same mixture (clusters picked by size, like popular topics), not index
  members, so an exact match never trivially tops the list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MixtureSpec:
    dim: int = 384
    vectors_per_cluster: int = 300
    """Number of clusters = N / vectors_per_cluster (at least 64): 333 at 100 k, 3 333 at 1 M."""
    clusters_per_topic: int = 25
    zipf: float = 0.9
    rank: int = 16
    spread: float = 0.55
    spread_sigma: float = 0.25
    """Log-normal σ of the per-cluster spread factor (some clusters tight, some diffuse)."""
    noise: float = 0.35
    cluster_offset: float = 0.8
    shared_offset: float = 0.35
    """Norm of a direction common to every topic centre (anisotropy of real embedding spaces)."""

    def clusters_for(self, n: int) -> int:
        return max(64, n // self.vectors_per_cluster)

    def describe(self) -> dict[str, Any]:
        return asdict(self)


class ClusteredSphere:
    """A fixed mixture (centres, bases, sizes) from which index vectors and queries are drawn."""

    def __init__(self, n_clusters: int, spec: MixtureSpec = MixtureSpec(), seed: int = 0):
        self.spec = spec
        rng = np.random.default_rng(seed)
        d = spec.dim
        n_topics = max(4, n_clusters // spec.clusters_per_topic)
        shared = _unit(rng.standard_normal(d))
        topics = _unit(_unit(rng.standard_normal((n_topics, d))) + spec.shared_offset * shared)
        topic_of = rng.integers(0, n_topics, size=n_clusters)
        offsets = _unit(rng.standard_normal((n_clusters, d))) * spec.cluster_offset
        self.centres = _unit(topics[topic_of] + offsets).astype(np.float32)
        weights = 1.0 / (np.arange(n_clusters) + 1.0) ** spec.zipf
        self.weights = rng.permutation(weights / weights.sum())
        # per-direction standard deviations: decaying spectrum, total norm ≈ spread × per-cluster factor
        decay = 1.0 / np.sqrt(np.arange(1, spec.rank + 1))
        decay /= np.sqrt((decay**2).sum())
        factor = np.exp(rng.normal(0.0, spec.spread_sigma, size=n_clusters))
        self.scales = (spec.spread * factor[:, None] * decay[None, :]).astype(np.float32)
        self.seed = seed
        self._basis_seed = int(rng.integers(0, 2**31 - 1))

    @property
    def n_clusters(self) -> int:
        return len(self.centres)

    def _basis(self, cluster: int) -> np.ndarray:
        """rank × dim orthonormal rows, drawn from the cluster's own seed (no need to hold all of them)."""
        rng = np.random.default_rng((self._basis_seed, cluster))
        q, _ = np.linalg.qr(rng.standard_normal((self.spec.dim, self.spec.rank)))
        return q.T.astype(np.float32)

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` L2-normalised float32 vectors and their cluster numbers (rows in random cluster order)."""
        rng = np.random.default_rng(seed)
        d, rank = self.spec.dim, self.spec.rank
        cluster_of = rng.choice(self.n_clusters, size=n, p=self.weights)
        order = np.argsort(cluster_of, kind="stable")
        bounds = np.searchsorted(cluster_of[order], np.arange(self.n_clusters + 1))
        out = np.empty((n, d), dtype=np.float32)
        noise_sd = np.float32(self.spec.noise / np.sqrt(d))
        for c in np.flatnonzero(np.diff(bounds)):
            rows = order[bounds[c] : bounds[c + 1]]
            z = rng.standard_normal((len(rows), rank), dtype=np.float32) * self.scales[c]
            block = z @ self._basis(int(c))
            block += self.centres[c]
            block += rng.standard_normal((len(rows), d), dtype=np.float32) * noise_sd
            out[rows] = block
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out, cluster_of


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def describe_geometry(
    vectors: np.ndarray, clusters: np.ndarray, centres: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """A few cosines that characterise a sample (for the report): to its own centre, to a random other vector,
    and between two vectors of the same cluster."""
    rng = np.random.default_rng(seed)
    n = min(2000, len(vectors))
    pick = rng.choice(len(vectors), size=n, replace=False)
    own = np.einsum("ij,ij->i", vectors[pick], centres[clusters[pick]])
    other = rng.choice(len(vectors), size=n)
    random_pair = np.einsum("ij,ij->i", vectors[pick], vectors[other])
    order = np.argsort(clusters, kind="stable")
    pairs = np.flatnonzero(clusters[order[:-1]] == clusters[order[1:]])
    pairs = rng.choice(pairs, size=min(n, len(pairs)), replace=False) if len(pairs) else pairs
    same = np.einsum("ij,ij->i", vectors[order[pairs]], vectors[order[pairs + 1]])
    return {
        "cos_to_own_centre_mean": round(float(own.mean()), 3),
        "cos_random_pair_mean": round(float(random_pair.mean()), 3),
        "cos_same_cluster_pair_mean": round(float(same.mean()), 3) if len(same) else float("nan"),
    }
