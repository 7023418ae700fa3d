"""Magic, fixed: image–gene contrastive pre-training (ALBEF-style) and an image → expression decoder.

Bundled plug-in (entry point ``magic``). Components: the scBERT-style ``performer`` gene encoder, the
fine-tunable ``magic-vit`` image encoder, the ``albef-itc`` contrastive objective (projection heads,
learnable clamped temperature, momentum encoders, queues, distillation), the ``itm`` matching objective
with hard negatives, the ``token-cross-attention`` fusion and the ``gene-query-decoder``. The two-stage
pipeline is :mod:`stmm_magic.pipeline`; nothing heavy is imported here.
"""
