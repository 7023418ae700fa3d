"""Downstream tasks on embeddings: spatial-domain clustering (GMM ≈ mclust EEE, Leiden with a target K, KMeans)."""
