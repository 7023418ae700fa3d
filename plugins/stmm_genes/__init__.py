"""Gene feature extractors: library-size normalisation, log1p, highly variable genes, z-score, optional PCA.

Importing this package is cheap; scanpy / scikit-learn are imported on first use.
"""
