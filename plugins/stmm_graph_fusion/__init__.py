"""The graph-fusion pipeline family (StereoMM and relatives), a bundled plug-in registered exactly as a
third-party family would be (``stmm_pipeline_families`` in :mod:`stmm_graph_fusion.plugin`).

section → gene features ┐
        → image features ├→ fusion (trainable) → graph model → embedding → task (domains)
        → spatial graph  ┘

Modules: :mod:`.settings` (the ``train`` block, light), :mod:`.plugin` (registration, light), :mod:`.family`
(the :class:`stmm_core.pipeline_base.Pipeline` implementation)."""
