"""Pipelines as Hugging Face Hub artifacts: save, load, verify, push and pull.

A saved pipeline is a folder (:mod:`stmm_core.hub.pipeline_dir`)::

    spec.json          the validated spec (components named through the local catalogue only)
    model.safetensors  trained weights, keys prefixed per component (fusion.*, graph.*), spec hash in metadata
    preprocess.json    the fitted gene preprocessing state (genes, scaling, PCA), so features are identical
    metrics.json       what the fit measured (optional)
    README.md          the model card (YAML front matter with library_name: stmm)
    manifest.json      sha256 and size of every file above, stmm and plug-in versions, source Hub commits

``stmm fit`` writes these files into its run folder, so a run folder can be pushed as it is. Nothing in a
pipeline folder is executed or unpickled: weights are safetensors, the rest is JSON and Markdown.

Modules: :mod:`~stmm_core.hub.manifest` (hashes, versions, verification), :mod:`~stmm_core.hub.card` (model
card), :mod:`~stmm_core.hub.pipeline_dir` (save/load), :mod:`~stmm_core.hub.remote` (push/pull through
``huggingface_hub``), :mod:`~stmm_core.hub.settings` (Hub endpoint, cache, token and offline mode, read at call
time). Importing this package imports neither torch nor ``huggingface_hub``.
"""
