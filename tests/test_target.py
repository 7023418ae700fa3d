"""The graph model's reconstruction target is a declared setting of the pipeline (``train.target``), not the
fusion module's decision; its default reproduces what every fusion computed before, and old specs keep their
hash."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stmm_core.cli.compose_cmd import compose_spec
from stmm_core.errors import SpecError
from stmm_core.interfaces import Fusion
from stmm_core.pipeline.target import TARGETS, reconstruction_target, rms_norm
from stmm_core.plugins import get_catalogue
from stmm_core.spec import parse_spec
from stmm_graph_fusion.settings import TrainSpec

pytestmark = pytest.mark.usefixtures("single_torch_thread")

GRAPH_RECIPES = ("stereomm", "stereomm-expression", "graphst", "expression-gmm", "image-gmm")


def _fusion(name: str, **params):
    return get_catalogue().get("fusion", name).build(params)


@pytest.fixture
def feats():
    g = torch.Generator().manual_seed(0)
    return 40.0 * torch.randn(30, 6, generator=g) + 3.0, torch.randn(30, 4, generator=g)


def test_default_target_is_left_out_of_the_spec_so_hashes_do_not_move():
    assert TrainSpec.model_fields["target"].default == "inputs" and set(TARGETS) == {"inputs", "gene", "image", "concat"}
    for recipe in GRAPH_RECIPES:
        spec = compose_spec(recipe)
        raw = json.loads(spec.canonical_json())
        assert "target" not in raw["train"]  # a spec written before the setting existed looks the same
        explicit = {**raw, "train": {**raw["train"], "target": "inputs"}}
        assert parse_spec(explicit).hash() == spec.hash() == parse_spec(raw).hash()
        gene = spec.with_overrides({"train.target": "gene"})
        assert gene.train.target == "gene" and json.loads(gene.canonical_json())["train"]["target"] == "gene"
        assert gene.hash() != spec.hash() and parse_spec(json.loads(gene.canonical_json())).hash() == gene.hash()
    with pytest.raises(SpecError, match="train.target"):
        compose_spec("stereomm", None, {"train.target": "fused"})


def test_inputs_target_reproduces_each_fusions_former_target(feats):
    img, gene = feats
    # concat: [img_weight·img ‖ gene_weight·gene]
    got = reconstruction_target("inputs", _fusion("concat", img_weight=2.0, gene_weight=0.5), img, gene)
    torch.testing.assert_close(got, torch.cat([2.0 * img, 0.5 * gene], 1), rtol=0, atol=0)
    # attention, balanced: the image block rescaled to the gene block's RMS row norm, then weighted
    att = _fusion("attention", dim=8, heads=2, img_weight=0.5, gene_weight=3.0)
    scaled = img * (rms_norm(gene) / rms_norm(img).clamp_min(1e-12))
    torch.testing.assert_close(reconstruction_target("inputs", att, img, gene),
                               torch.cat([scaled * 0.5, gene * 3.0], 1), rtol=0, atol=0)
    raw = _fusion("attention", dim=8, heads=2, img_weight=0.5, gene_weight=3.0, balance=False)
    torch.testing.assert_close(reconstruction_target("inputs", raw, img, gene), torch.cat([0.5 * img, 3.0 * gene], 1))
    torch.testing.assert_close(reconstruction_target("inputs", att, None, gene), 3.0 * gene)  # no image
    # image-only fusion reads the image alone
    torch.testing.assert_close(reconstruction_target("inputs", _fusion("image-only"), img, gene), img)


def test_explicit_targets_ignore_the_fusion(feats):
    img, gene = feats
    for fusion in (_fusion("concat", img_weight=2.0), _fusion("attention", dim=8, heads=2, gene_weight=3.0)):
        torch.testing.assert_close(reconstruction_target("gene", fusion, img, gene), gene)
        torch.testing.assert_close(reconstruction_target("image", fusion, img, gene), img)
        torch.testing.assert_close(reconstruction_target("concat", fusion, img, gene), torch.cat([img, gene], 1))
        torch.testing.assert_close(reconstruction_target("concat", fusion, None, gene), gene)
    with pytest.raises(SpecError, match="train.target=image needs image features"):
        reconstruction_target("image", _fusion("concat"), None, gene)


def test_a_fusion_needs_no_target_method(feats):
    """The interface no longer asks for one: a fusion that never defines a target works with every setting, and
    the magic token fusion no longer invents one."""
    img, gene = feats

    class Plain(torch.nn.Module, Fusion):
        def __init__(self) -> None:
            torch.nn.Module.__init__(self)
            Fusion.__init__(self, None)

        def setup(self, d_img, d_gene):
            self.out_dim = d_gene

        def forward(self, img, gene, graph=None):
            return gene

    plain = Plain()  # instantiable: target is not abstract any more
    torch.testing.assert_close(reconstruction_target("inputs", plain, img, gene), torch.cat([img, gene], 1))
    token = get_catalogue().get("fusion", "token-cross-attention").load()
    assert not hasattr(token, "target") and not hasattr(Fusion, "target")


def test_the_fit_and_the_saved_pipeline_use_the_declared_target(tmp_path):
    """train.target=gene sizes the decoder to the gene features, and 'stmm embed' of the saved pipeline rebuilds
    the same target (the embedding of the fit is reproduced)."""
    from stmm_core.data.readers import read_section
    from stmm_core.hub.pipeline_dir import load_pipeline, save_pipeline
    from stmm_graph_fusion.embed import embed_section
    from stmm_graph_fusion.fit import fit_graph_fusion
    from stmm_core.testing.synthetic import make_synthetic_adata

    path = tmp_path / "s.h5ad"
    make_synthetic_adata(n_spots=150, n_genes=60, n_domains=3, seed=1, image=False).write_h5ad(path)
    section = read_section(path)
    sets = {"gene.n_top_genes": 40, "gene.pca": 8, "graph.hidden": [16], "graph.latent": 4, "train.epochs": 3,
            "fusion.gene_weight": 2.0}
    fits = {}
    for target in ("inputs", "gene"):
        spec = compose_spec("stereomm-expression", None, {**sets, "train.target": target})
        fits[target] = fit_graph_fusion(spec, section, n_domains=None, progress=False)
    # same widths (gene features only), different targets: 2·gene vs gene
    assert not np.allclose(fits["inputs"].embedding, fits["gene"].embedding)
    res = fits["gene"]
    save_pipeline(tmp_path / "run", res.spec, res.state_dict, gene_state=res.gene_state)
    loaded = load_pipeline(tmp_path / "run")
    assert loaded.spec.train.target == "gene"
    emb, _ = embed_section(loaded, section)
    np.testing.assert_allclose(emb, res.embedding, rtol=1e-5, atol=1e-6)
