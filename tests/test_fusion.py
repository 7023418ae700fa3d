"""Fusion plug-in: cross-modal attention (neighbourhood / global) and concatenation."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from stmm_core.errors import DataError, SpecError, StmmError
from stmm_core.interfaces import Fusion, GraphContext
from stmm_core.pipeline.target import reconstruction_target
from stmm_fusion.attention import CrossAttentionFusion, ModalityAttention
from stmm_fusion.concat import ConcatFusion
from stmm_fusion.params import AttentionFusionParams, ConcatFusionParams


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def grid_context(side: int) -> GraphContext:
    """4-neighbour square grid (symmetric, no self loops) as a GraphContext."""
    idx = np.arange(side * side).reshape(side, side)
    pairs = np.concatenate(
        [np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1), np.stack([idx[:-1].ravel(), idx[1:].ravel()], 1)]
    )
    ei = np.concatenate([pairs, pairs[:, ::-1]]).T
    return GraphContext(edge_index=torch.as_tensor(np.ascontiguousarray(ei), dtype=torch.long), n_nodes=side * side)


def make(**kw) -> CrossAttentionFusion:
    fusion = CrossAttentionFusion(AttentionFusionParams(**kw))
    fusion.setup(12, 20)
    return fusion


@pytest.fixture
def data():
    torch.manual_seed(0)
    n = 36
    return torch.randn(n, 12), torch.randn(n, 20), grid_context(6)


# --------------------------------------------------------------------------- params
def test_params_validation():
    AttentionFusionParams()  # defaults valid
    with pytest.raises(ValidationError):
        AttentionFusionParams(dim=10, heads=4)  # heads must divide dim
    with pytest.raises(ValidationError):
        AttentionFusionParams(bogus=1)  # extra forbidden
    with pytest.raises(ValidationError):
        AttentionFusionParams(mode="self")
    p = AttentionFusionParams()
    with pytest.raises(ValidationError):
        p.dim = 3  # frozen


def test_interfaces():
    fusion = CrossAttentionFusion(AttentionFusionParams())
    assert isinstance(fusion, Fusion) and isinstance(fusion, torch.nn.Module)
    assert isinstance(ConcatFusion(ConcatFusionParams()), Fusion)


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("scope", ["neighbourhood", "global"])
@pytest.mark.parametrize("mode", ["cross", "gene", "image"])
def test_shapes_and_dtype(data, scope, mode):
    img, gene, ctx = data
    torch.manual_seed(1)
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=16, heads=4, mode=mode, scope=scope, chunk_size=7))
    fusion.setup(12, 20)
    out = fusion(img, gene, ctx)
    assert out.shape == (36, 32) and fusion.out_dim == 32 and out.dtype == torch.float32
    assert hasattr(fusion, "attn_gene") == (mode in ("cross", "gene"))
    assert hasattr(fusion, "attn_img") == (mode in ("cross", "image"))
    # the block that is not updated is the plain projection
    if mode == "gene":
        torch.testing.assert_close(out[:, :16], fusion.img_proj(img))
    if mode == "image":
        torch.testing.assert_close(out[:, 16:], fusion.gene_proj(gene))
    assert reconstruction_target("inputs", fusion, img, gene).shape == (36, 32)


def test_cross_uses_separate_modules():
    fusion = make(dim=16, heads=2)
    assert fusion.attn_gene is not fusion.attn_img
    assert fusion.attn_gene.q.weight.data_ptr() != fusion.attn_img.q.weight.data_ptr()


def test_no_image_modality(data):
    _, gene, ctx = data
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=16, heads=4, gene_weight=2.0))
    fusion.setup(None, 20)
    out = fusion(None, gene, ctx)
    assert fusion.out_dim == 16 and out.shape == (36, 16)
    torch.testing.assert_close(out, 2.0 * fusion.gene_proj(gene))
    torch.testing.assert_close(reconstruction_target("inputs", fusion, None, gene), 2.0 * gene)
    with pytest.raises(DataError):
        fusion(torch.randn(36, 12), gene, ctx)


def test_target_is_raw_weighted_concat(data):
    img, gene, ctx = data
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=8, heads=2, img_weight=0.5, gene_weight=3.0,
                                                        balance=False))
    fusion.setup(12, 20)
    target = reconstruction_target("inputs", fusion, img, gene)
    torch.testing.assert_close(target, torch.cat([0.5 * img, 3.0 * gene], 1))
    assert not target.requires_grad


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).sum(1).mean().sqrt())


def test_balanced_target_gives_the_image_block_the_gene_block_norm(data):
    """A 12-d image block with 40x the scale of the 20-d gene block: balanced, its RMS row norm equals the gene
    block's (times the weight ratio), the gene block is untouched, and the image block keeps its shape."""
    img, gene, ctx = data
    big = 40.0 * img + 3.0
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=8, heads=2, img_weight=0.5, gene_weight=2.0))
    fusion.setup(12, 20)
    target = reconstruction_target("inputs", fusion, big, gene)
    t_img, t_gene = target[:, :12], target[:, 12:]
    torch.testing.assert_close(t_gene, 2.0 * gene)
    assert rms(t_img) == pytest.approx(0.5 * rms(gene), rel=1e-5)
    # a pure rescaling: direction of every row preserved
    torch.testing.assert_close(t_img / rms(t_img), big / rms(big))
    # the gene-only target is unchanged by balancing
    solo = CrossAttentionFusion(AttentionFusionParams(dim=8, heads=2, gene_weight=2.0))
    solo.setup(None, 20)
    torch.testing.assert_close(reconstruction_target("inputs", solo, None, gene), 2.0 * gene)
    # an all-zero image block stays finite
    assert torch.isfinite(reconstruction_target("inputs", fusion, torch.zeros_like(img), gene)).all()


def test_weights_scale_blocks(data):
    img, gene, ctx = data
    torch.manual_seed(3)
    a = CrossAttentionFusion(AttentionFusionParams(dim=8, heads=2))
    a.setup(12, 20)
    b = CrossAttentionFusion(AttentionFusionParams(dim=8, heads=2, img_weight=2.0, gene_weight=0.5))
    b.setup(12, 20)
    b.load_state_dict(a.state_dict())
    oa, ob = a(img, gene, ctx), b(img, gene, ctx)
    torch.testing.assert_close(ob[:, :8], 2.0 * oa[:, :8])
    torch.testing.assert_close(ob[:, 8:], 0.5 * oa[:, 8:])


# --------------------------------------------------------------------------- training signal
@pytest.mark.parametrize("scope", ["neighbourhood", "global"])
def test_gradients_reach_qkv(data, scope):
    """The published attention ran under no_grad: Q/K/V never trained. Here every projection gets a gradient."""
    img, gene, ctx = data
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=16, heads=4, scope=scope, chunk_size=10))
    fusion.setup(12, 20)
    fusion(img, gene, ctx).pow(2).mean().backward()
    for module in (fusion.attn_gene, fusion.attn_img):
        for lin in (module.q, module.k, module.v, module.out):
            assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0
    for proj in (fusion.img_proj, fusion.gene_proj):
        assert proj[0].weight.grad.abs().sum() > 0


def test_deterministic_for_seed(data):
    img, gene, ctx = data
    outs = []
    for _ in range(2):
        torch.manual_seed(42)
        fusion = CrossAttentionFusion(AttentionFusionParams(dim=16, heads=4, dropout=0.1))
        fusion.setup(12, 20)
        outs.append(fusion(img, gene, ctx))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


# --------------------------------------------------------------------------- references
def dense_reference(mod: ModalityAttention, xq: torch.Tensor, xkv: torch.Tensor, mask: torch.Tensor | None):
    n, h, hd = xq.shape[0], mod.heads, mod.head_dim
    q = mod.q(xq).view(n, h, hd).transpose(0, 1)
    k = mod.k(xkv).view(-1, h, hd).transpose(0, 1)
    v = mod.v(xkv).view(-1, h, hd).transpose(0, 1)
    scores = q @ k.transpose(1, 2) / math.sqrt(hd)  # (h, N, M)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    ctx = torch.softmax(scores, -1) @ v
    return mod.out(ctx.transpose(0, 1).reshape(n, -1))


def fused_reference(fusion: CrossAttentionFusion, img, gene, mask=None):
    img_p, gene_p = fusion.img_proj(img), fusion.gene_proj(gene)
    gene_new = gene_p + dense_reference(fusion.attn_gene, gene_p, img_p, mask)
    img_new = img_p + dense_reference(fusion.attn_img, img_p, gene_p, mask)
    return torch.cat([img_new, gene_new], 1)


def test_global_matches_dense_reference():
    torch.manual_seed(0)
    n = 50
    img, gene = torch.randn(n, 12), torch.randn(n, 20)
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=16, heads=4, scope="global", chunk_size=16))
    fusion.setup(12, 20)
    with torch.no_grad():
        torch.testing.assert_close(fusion(img, gene, None), fused_reference(fusion, img, gene), rtol=0, atol=1e-5)


def test_neighbourhood_matches_masked_dense_reference(data):
    img, gene, ctx = data
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=16, heads=4, scope="neighbourhood"))
    fusion.setup(12, 20)
    mask = torch.eye(36, dtype=torch.bool)
    mask[ctx.edge_index[1], ctx.edge_index[0]] = True  # query at dst attends to src
    with torch.no_grad():
        torch.testing.assert_close(fusion(img, gene, ctx), fused_reference(fusion, img, gene, mask), rtol=0, atol=1e-5)
    assert set(fusion.last_entropy) == {"gene", "image"}
    assert 0 < fusion.last_entropy["gene"] <= math.log(5) + 1e-6  # at most 4 neighbours + self


def test_neighbourhood_only_mixes_along_edges(data):
    img, gene, ctx = data
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=16, heads=4))
    fusion.setup(12, 20)
    spot, neighbour, far = 0, 1, 35  # grid corner, its right neighbour, the opposite corner
    with torch.no_grad():
        base = fusion(img, gene, ctx)
        img2, gene2 = img.clone(), gene.clone()
        img2[far] += 5.0
        gene2[far] -= 5.0
        moved = fusion(img2, gene2, ctx)
        torch.testing.assert_close(moved[spot], base[spot], rtol=0, atol=0)
        assert not torch.allclose(moved[far], base[far])
        img3 = img.clone()
        img3[neighbour] += 5.0
        assert not torch.allclose(fusion(img3, gene, ctx)[spot], base[spot])
    # the global scope does mix with far spots
    fusion_g = CrossAttentionFusion(AttentionFusionParams(dim=16, heads=4, scope="global"))
    fusion_g.setup(12, 20)
    with torch.no_grad():
        assert not torch.allclose(fusion_g(img2, gene2, None)[spot], fusion_g(img, gene, None)[spot])


def test_global_entropy_recorded_in_eval():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=16, heads=4, scope="global"))
    fusion.setup(12, 20)
    img, gene = torch.randn(40, 12), torch.randn(40, 20)
    fusion.train()
    fusion(img, gene, None)
    assert fusion.last_entropy == {}
    fusion.eval()
    with torch.no_grad():
        fusion(img, gene, None)
    assert 0 < fusion.last_entropy["gene"] <= math.log(40) + 1e-5


# --------------------------------------------------------------------------- errors
def test_user_errors(data):
    img, gene, ctx = data
    fusion = make(dim=16, heads=4)
    with pytest.raises(SpecError, match="graph"):
        fusion(img, gene, None)  # neighbourhood scope needs the graph
    with pytest.raises(DataError):
        fusion(img[:, :5], gene, ctx)
    with pytest.raises(DataError):
        fusion(img[:30], gene, ctx)
    with pytest.raises(DataError):
        fusion(img[:30], gene[:30], ctx)  # graph has 36 nodes
    with pytest.raises(StmmError):
        fusion(None, gene, ctx)  # set up with an image modality


# --------------------------------------------------------------------------- memory
MEMORY_SCRIPT = textwrap.dedent(
    """
    import resource, time, torch
    from stmm_fusion.attention import CrossAttentionFusion
    from stmm_fusion.params import AttentionFusionParams

    def rss_mb():
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024

    torch.manual_seed(0)
    n, d = 30_000, 64
    fusion = CrossAttentionFusion(AttentionFusionParams(dim=d, heads=4, mode="gene", scope="global"))
    fusion.setup(d, d)
    img, gene = torch.randn(n, d), torch.randn(n, d)
    before = rss_mb()
    t0 = time.time()
    fusion(img, gene, None).pow(2).mean().backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert fusion.attn_gene.q.weight.grad.abs().sum() > 0
    print(f"GROWTH_MB={peak - before:.0f} SECONDS={time.time() - t0:.1f}")
    """
)


def test_global_attention_memory_is_linear():
    """N=30,000, d=64: a dense N×N float32 matrix alone is 3.6 GB; fwd+bwd must grow RSS by < 1 GB."""
    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/status")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    growth = float(proc.stdout.split("GROWTH_MB=")[1].split()[0])
    assert growth < 1024, proc.stdout


# --------------------------------------------------------------------------- concat
def test_concat_fusion(data):
    img, gene, ctx = data
    fusion = ConcatFusion(ConcatFusionParams(img_weight=2.0, gene_weight=0.5))
    fusion.setup(12, 20)
    assert fusion.out_dim == 32 and len(list(fusion.parameters())) == 0
    out = fusion(img, gene, ctx)
    torch.testing.assert_close(out, torch.cat([2.0 * img, 0.5 * gene], 1))
    torch.testing.assert_close(reconstruction_target("inputs", fusion, img, gene), out)
    fusion.setup(None, 20)
    assert fusion.out_dim == 20
    torch.testing.assert_close(fusion(None, gene), 0.5 * gene)
    with pytest.raises(DataError):
        fusion(img[:10], gene)
    assert fusion(img.double(), gene.double()).dtype == torch.float32


def test_params_modules_are_light():
    """Parameter models are imported at CLI start-up: they must not pull torch or numpy."""
    code = (
        "import sys, stmm_fusion.params, stmm_graph.params, stmm_tasks.params\n"
        "heavy = [m for m in ('torch', 'numpy', 'sklearn', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
