"""Ward clustering of an embedding into K domains."""

from __future__ import annotations

import numpy as np

from stmm_core.errors import StmmError
from stmm_core.interfaces import Task


class WardClustering(Task):
    """``run(embedding (N, L), K, seed) -> labels (N,)`` with sklearn's AgglomerativeClustering."""

    def run(self, embedding: np.ndarray, n_domains: int, seed: int = 0) -> np.ndarray:
        from sklearn.cluster import AgglomerativeClustering

        if not 1 <= n_domains <= len(embedding):
            raise StmmError(f"K={n_domains} is not possible with {len(embedding)} spots")
        model = AgglomerativeClustering(n_clusters=n_domains, linkage=self.params.linkage)
        return model.fit_predict(embedding).astype(np.int64)
