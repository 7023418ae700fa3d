"""``--set`` overrides that shrink the magic recipes to a seconds-long CPU fit (shared by the magic tests).

``TINY_MODEL`` shrinks the default ``magic`` recipe (frozen feature bank + trainable MLP image encoder);
``TINY_VIT_MODEL`` shrinks the ``magic-vit`` recipe (the published design: a ViT trained in stage 1)."""

_SHARED = [
    "--set", "gene.n_genes=16", "--set", "gene.dim=16", "--set", "gene.depth=1", "--set", "gene.heads=2",
    "--set", "gene.dim_head=8", "--set", "gene.out_dim=16",
    "--set", "contrastive.embed_dim=16", "--set", "contrastive.queue_size=32",
    "--set", "fusion.dim=16", "--set", "fusion.heads=2", "--set", "fusion.ff_mult=2",
    "--set", "decoder.n_targets=12", "--set", "decoder.dim=16", "--set", "decoder.heads=2",
    "--set", "decoder.expansion=[16]", "--set", "decoder.n_eval_hvg=5",
]
TINY_MODEL = ["--set", "image.img_size=32", "--set", "image.hidden=[16]", "--set", "image.out_dim=16"] + _SHARED
TINY_VIT_MODEL = ["--set", "image.model=test_vit", "--set", "image.img_size=32"] + _SHARED


def write_sections(root, n: int = 3) -> list:
    """Write *n* small synthetic sections with an image (36 spots, 40 genes, seeds 1..n) under *root*; their paths."""
    from stmm_core.testing.synthetic import make_synthetic_adata

    paths = []
    for i in range(1, n + 1):
        p = root / f"s{i}.h5ad"
        make_synthetic_adata(n_spots=36, n_genes=40, n_domains=3, seed=i, image_scale=0.5).write_h5ad(p)
        paths.append(p)
    return paths
