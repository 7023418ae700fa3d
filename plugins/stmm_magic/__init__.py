"""Magic, fixed: image–gene contrastive pre-training (ALBEF-style) and an image → expression decoder.

Bundled plug-in (entry point ``magic``). Components: the scBERT-style ``performer`` gene encoder, the
fine-tunable ``magic-vit`` image encoder, the ``albef-itc`` contrastive objective (projection heads,
learnable clamped temperature, momentum encoders, queues, distillation), the ``itm`` matching objective
with hard negatives, the ``token-cross-attention`` fusion and the ``gene-query-decoder``. The two-stage
pipeline is :mod:`stmm_magic.pipeline`; nothing heavy is imported here.

It is also the ``magic`` pipeline family (``stmm_pipeline_families`` in :mod:`stmm_magic.plugin`): its slot table
and train schema are :mod:`stmm_magic.settings`, its :class:`stmm_core.pipeline_base.Pipeline` implementation
:mod:`stmm_magic.family`, its run folder :mod:`stmm_magic.run_io`, its benchmark measurements
:mod:`stmm_magic.bench`. A new pipeline family is a package shaped like this one.
"""
