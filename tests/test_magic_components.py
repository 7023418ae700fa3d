"""Magic components: shapes, gene lookup by name, FAVOR+, ALBEF distillation/queues/EMA, ITM negatives, metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

torch = pytest.importorskip("torch")

from stmm_core.data.section import Section  # noqa: E402
from stmm_core.errors import DataError  # noqa: E402


def _section(counts: np.ndarray, genes: list[str], name: str = "s") -> Section:
    n = counts.shape[0]
    return Section(name=name, obs_names=pd.Index([f"spot{i}" for i in range(n)]),
                   counts=sp.csr_matrix(counts.astype(np.float32)), gene_names=pd.Index(genes),
                   coords=np.stack([np.arange(n), np.zeros(n)], 1).astype(float) * 100)


def _gene_encoder(**kw):
    from stmm_magic.gene_encoder import PerformerGeneEncoder
    from stmm_magic.params import PerformerGeneEncoderParams

    p = dict(n_genes=6, dim=16, depth=1, heads=2, dim_head=8, out_dim=12)
    p.update(kw)
    return PerformerGeneEncoder(PerformerGeneEncoderParams(**p))


# ------------------------------------------------------------------------------------------ performer
def test_favor_approximates_softmax_attention():
    from stmm_magic.performer import favor_features, linear_attention, orthogonal_gaussian

    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 20, 8, generator=g) * 0.5
    k = torch.randn(1, 1, 20, 8, generator=g) * 0.5
    v = torch.randn(1, 1, 20, 4, generator=g)
    exact = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1) @ v
    proj = orthogonal_gaussian(4096, 8, torch.Generator().manual_seed(1))
    approx = linear_attention(favor_features(q, proj, True), favor_features(k, proj, False), v)
    assert torch.corrcoef(torch.stack([exact.flatten(), approx.flatten()]))[0, 1] > 0.95


@pytest.mark.parametrize("kernel", ["favor", "elu"])
def test_performer_shapes_and_redraw(kernel):
    from stmm_magic.performer import Performer

    torch.manual_seed(0)
    net = Performer(dim=16, depth=2, heads=2, dim_head=8, kernel=kernel, redraw_interval=2)
    x = torch.randn(3, 10, 16)
    assert net(x).shape == (3, 10, 16)
    if kernel == "favor":
        attn = net.layers[0].attn
        before = attn.projection.clone()
        net.train()
        for _ in range(3):
            net(x)
        assert not torch.equal(before, attn.projection)  # redrawn after 2 training calls


# --------------------------------------------------------------------------------------- gene encoder
def test_binning_keeps_detected_genes_apart_from_zero():
    from stmm_magic.genes import bin_tokens

    x = np.array([[0.0, 0.5, 1.0, 3.0, 100.0, 1e6]])
    assert bin_tokens(x, 5, "log2").tolist() == [[0, 1, 1, 2, 5, 5]]
    assert bin_tokens(x, 5, "scbert").tolist() == [[0, 0, 1, 2, 5, 5]]


def test_gene_encoder_looks_genes_up_by_name_not_column_order():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3, size=(5, 6)).astype(float)
    genes = [f"G{i}" for i in range(6)]
    enc = _gene_encoder().setup(["G4", "G0", "G2"])
    tok_a = enc.tokenize(_section(counts, genes))
    perm = [5, 3, 1, 0, 2, 4]
    tok_b = enc.tokenize(_section(counts[:, perm], [genes[j] for j in perm]))
    np.testing.assert_array_equal(tok_a, tok_b)
    # a vocabulary gene the section lacks gets the mask token
    tok_c = enc.tokenize(_section(counts[:, :3], genes[:3]))
    assert (tok_c[:, 0] == enc.mask_token).all() and (tok_c[:, 1:] < enc.mask_token).all()
    out = enc(torch.from_numpy(tok_a))
    assert out["pooled"].shape == (5, 12) and out["tokens"].shape == (5, 3, 16)


def test_gene_encoder_rejects_sections_without_any_input_gene():
    enc = _gene_encoder().setup(["A", "B"])
    with pytest.raises(DataError, match="none of the gene encoder"):
        enc.tokenize(_section(np.ones((2, 2)), ["X", "Y"]))


def test_disjoint_gene_sets_are_one_clear_error():
    from stmm_magic.genes import shared_genes

    a, b = _section(np.ones((2, 2)), ["A", "B"]), _section(np.ones((2, 2)), ["C", "D"], "t")
    with pytest.raises(DataError, match="share 0 gene") as err:
        shared_genes([a, b], min_shared=2)
    assert "\n" not in str(err.value)
    assert shared_genes([a, _section(np.ones((2, 3)), ["B", "A", "Z"], "u")]) == ["A", "B"]


# ------------------------------------------------------------------------------------- contrastive
def _contrastive(alpha: float, queue: int = 8):
    from stmm_magic.contrastive import AlbefContrastive
    from stmm_magic.params import AlbefContrastiveParams

    torch.manual_seed(0)
    return AlbefContrastive(AlbefContrastiveParams(embed_dim=6, queue_size=queue, alpha=alpha)).setup(10, 7)


def test_distillation_changes_the_loss_and_queue_fills():
    torch.manual_seed(1)
    img, gene = torch.randn(4, 10), torch.randn(4, 7)
    img_m, gene_m = img + 0.3 * torch.randn(4, 10), gene + 0.3 * torch.randn(4, 7)
    idx = torch.arange(4)
    with_distill, without = _contrastive(0.4), _contrastive(0.0)
    a = with_distill(img, gene, img_m, gene_m, idx)
    b = without(img, gene, img_m, gene_m, idx)
    assert not torch.isclose(a["loss"], b["loss"])
    assert a["sim_i2g"].shape == (4, 4)
    # the momentum features were enqueued with their spot ids
    assert with_distill.image_queue.idx[:4].tolist() == [0, 1, 2, 3]
    assert int(with_distill.image_queue.ptr) == 4
    # a second step sees the queue: the loss changes although inputs are the same
    c = with_distill(img, gene, img_m, gene_m, idx)
    assert not torch.isclose(a["loss"], c["loss"])


def test_queue_entries_of_the_same_spot_are_positives():
    obj = _contrastive(0.0, queue=4)
    img, gene = torch.randn(2, 10), torch.randn(2, 7)
    obj(torch.randn(2, 10), torch.randn(2, 7), torch.randn(2, 10), torch.randn(2, 7),
        torch.tensor([5, 6]))  # enqueue other views of spots 5 and 6
    obj.eval()  # no further enqueue
    out_same = obj(img, gene, img, gene, torch.tensor([5, 6]))["loss"]
    out_new = obj(img, gene, img, gene, torch.tensor([7, 8]))["loss"]
    assert not torch.isclose(out_same, out_new)


def test_temperature_is_learnable_and_clamped():
    obj = _contrastive(0.4)
    assert obj.temp.requires_grad
    with torch.no_grad():
        obj.temp.fill_(5.0)
    obj(torch.randn(3, 10), torch.randn(3, 7), torch.randn(3, 10), torch.randn(3, 7), torch.arange(3))
    assert float(obj.temp.detach()) == pytest.approx(obj.params.temperature_max)


def test_ema_update_moves_momentum_weights():
    from stmm_magic.momentum import ema_update, momentum_copy

    online = torch.nn.Linear(3, 3)
    mom = momentum_copy(online)
    assert not any(p.requires_grad for p in mom.parameters())
    with torch.no_grad():
        online.weight.add_(1.0)
    before = mom.weight.clone()
    ema_update(online, mom, 0.9)
    torch.testing.assert_close(mom.weight, 0.9 * before + 0.1 * online.weight)


# ---------------------------------------------------------------------------------------------- ITM
def test_itm_hard_negatives_follow_the_tempered_similarities():
    from stmm_magic.itm import negative_weights, sample_negatives

    sim = torch.zeros(4, 4)
    sim[0, 2] = 50.0  # spot 2 is by far the most similar wrong partner of row 0
    sim.fill_diagonal_(100.0)  # the true pair is never a negative
    idx = torch.arange(4)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_negatives(sim, idx, g) for _ in range(50)])
    assert (draws[:, 0] == 2).all()
    assert not (draws == torch.arange(4)).any()
    w = negative_weights(sim, idx, hard=True)
    assert torch.allclose(w.sum(1), torch.ones(4))
    uniform = negative_weights(sim, idx, hard=False)
    assert torch.allclose(uniform[0], torch.tensor([0, 1 / 3, 1 / 3, 1 / 3]))
    # items of the same spot are never negatives of each other; a row without negatives gets -1
    same = sample_negatives(torch.zeros(2, 2), torch.tensor([3, 3]), g)
    assert same.tolist() == [-1, -1]


def test_fusion_attends_over_image_tokens():
    from stmm_magic.fusion import TokenCrossAttentionFusion
    from stmm_magic.params import TokenFusionParams

    torch.manual_seed(0)
    f = TokenCrossAttentionFusion(TokenFusionParams(dim=16, depth=1, heads=2, dropout=0.0))
    f.setup(10, 7)
    f.eval()
    img, gene = torch.randn(2, 5, 10), torch.randn(2, 9, 7)
    out = f(img, gene)
    assert out.shape == (2, 16)
    img2 = img.clone()
    img2[:, 3] += 5.0  # change one patch token only
    assert not torch.allclose(out, f(img2, gene))


def test_decoder_shapes_and_bias_initialised_to_training_mean():
    from stmm_magic.decoder import GeneQueryDecoder
    from stmm_magic.params import QueryDecoderParams

    torch.manual_seed(0)
    d = GeneQueryDecoder(QueryDecoderParams(dim=16, depth=1, heads=2, expansion=[8]))
    d.setup(10, ["a", "b", "c"], np.array([1.0, 2.0, 3.0]))
    assert d(torch.randn(4, 6, 10)).shape == (4, 3)
    assert d.gene_bias.tolist() == [1.0, 2.0, 3.0]


# ------------------------------------------------------------------------------------------ metrics
def test_pearson_excludes_and_counts_constant_genes():
    from stmm_core.expression_metrics import pearson_per_gene, pearson_per_spot

    true = np.array([[1.0, 5.0, 0.0], [2.0, 5.0, 1.0], [3.0, 5.0, 0.0], [4.0, 5.0, 1.0]])
    pred = np.array([[1.0, 1.0, 7.0], [2.0, 2.0, 7.0], [3.0, 3.0, 7.0], [4.0, 4.0, 7.0]])
    r = pearson_per_gene(pred, true, ["a", "b", "c"])
    assert r["n_constant_excluded"] == 1 and r["constant_excluded"] == ["b"]
    assert r["per_gene"]["b"] is None
    assert r["per_gene"]["a"] == pytest.approx(1.0)
    assert r["per_gene"]["c"] == 0.0 and r["n_constant_prediction"] == 1  # constant prediction counts as r=0
    assert r["mean"] == pytest.approx(0.5) and r["n_evaluated"] == 2
    s = pearson_per_spot(np.array([[1.0, 2.0], [1.0, 1.0]]), np.array([[1.0, 2.0], [3.0, 3.0]]))
    assert s["n_constant_excluded"] == 1 and s["mean"] == pytest.approx(1.0)


def test_retrieval_topk_and_chance_level():
    from stmm_core.expression_metrics import retrieval_topk

    n = 20
    perfect = retrieval_topk(np.eye(n))
    assert perfect["top1"] == 1.0 and perfect["chance_top1"] == pytest.approx(1 / n)
    assert perfect["chance_top5"] == pytest.approx(5 / n)
    rng = np.random.default_rng(0)
    rand = [retrieval_topk(rng.normal(size=(n, n)))["top5"] for _ in range(200)]
    assert abs(np.mean(rand) - 5 / n) < 0.03  # random scores sit at chance
    ties = retrieval_topk(np.zeros((4, 4)))  # ties count against the query
    assert ties["top1"] == 0.0


def test_gene_embedding_table_is_matched_by_name(tmp_path):
    table = tmp_path / "gene2vec.txt"
    table.write_text("3 8\nG2 1 2 3 4 5 6 7 8\nG0 8 7 6 5 4 3 2 1\nOTHER 0 0 0 0 0 0 0 0\n")
    enc = _gene_encoder(dim=8, heads=1, dim_head=8, gene_embedding_file=str(table),
                        freeze_gene_embedding=True).setup(["G0", "G1", "G2"])
    w = enc.gene_embedding.weight
    assert w[0].tolist() == [8, 7, 6, 5, 4, 3, 2, 1] and w[2].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert not w.requires_grad
    with pytest.raises(DataError, match="dim"):
        _gene_encoder(gene_embedding_file=str(table)).setup(["G0"])
