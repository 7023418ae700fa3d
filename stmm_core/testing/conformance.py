"""A conformance check any registered component can run: shapes, determinism, save/load round trip.

    from stmm_core.testing.conformance import check_component
    report = check_component("graph_model", "vgae", {"hidden": [16], "latent": 4})
    assert report.ok, report.failures

Each kind is driven through its interface on a tiny synthetic section (a few dozen spots): outputs must have
the declared shapes and be finite float32; building twice with the same seed must give identical outputs;
trainable components' weights must survive a safetensors round trip into a freshly built instance (strict
load, identical outputs); gene encoders with ``state()``/``load_state()`` must restore identical features; a
graph model that declares exact partition training (``partition_support``) must give the full-batch loss and
gradient over partitions (:mod:`stmm_core.testing.partition`).
Image encoders are built with ``weights="random"`` when their parameters have that option, so the check needs
no network. Kinds without a generic driver (decoders, objectives) are reported as skipped, not passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np


@dataclass
class ConformanceReport:
    """What was checked and what failed."""

    kind: str
    name: str
    checks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return not self.failures and self.skipped is None

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.kind}/{self.name}: skipped ({self.skipped})"
        status = "ok" if self.ok else "FAILED: " + "; ".join(self.failures)
        return f"{self.kind}/{self.name}: {status} ({', '.join(self.checks)})"


def _section(n_spots: int = 64, n_genes: int = 40):
    import tempfile
    from pathlib import Path

    from stmm_core.data.readers import read_section
    from stmm_core.testing.synthetic import make_synthetic_adata

    with tempfile.TemporaryDirectory(prefix="stmm-conformance-") as tmp:
        path = Path(tmp) / "section.h5ad"
        make_synthetic_adata(n_spots=n_spots, n_genes=n_genes, n_domains=3, seed=0).write_h5ad(path)
        section = read_section(path)
        section.adata = section.adata.to_memory() if getattr(section.adata, "isbacked", False) else section.adata
        return section


def _roundtrip(module: Any, fresh: Any) -> None:
    """safetensors bytes of *module*'s state → strict load into *fresh*."""
    from safetensors.torch import load, save

    blob = save({k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    fresh.load_state_dict(load(blob), strict=True)


def check_component(kind: str, name: str, params: dict[str, Any] | None = None, seed: int = 0) -> ConformanceReport:
    """Run the conformance checks of one registered component (see the module docstring)."""
    from stmm_core.plugins import get_catalogue

    info = get_catalogue().get(kind, name)
    params = dict(params or {})
    if kind == "image_encoder" and "weights" in info.params.model_fields:
        params.setdefault("weights", "random")
    report = ConformanceReport(kind, info.name)
    driver = _DRIVERS.get(kind)
    if driver is None:
        report.skipped = f"no generic driver for kind {kind!r}; test it with its own pipeline"
        return report

    def build() -> Any:
        from stmm_core.seeding import seed_everything

        seed_everything(seed)
        return info.build(params)

    try:
        driver(build, report, seed)
    except AssertionError as exc:
        report.failures.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - a crash is a conformance failure, reported with its type
        report.failures.append(f"{type(exc).__name__}: {exc}")
    return report


def _finite32(x: np.ndarray, what: str) -> None:
    assert x.dtype == np.float32, f"{what} is {x.dtype}, expected float32"
    assert np.isfinite(x).all(), f"{what} has NaN/inf"


def _image(build: Callable[[], Any], report: ConformanceReport, seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    tiles = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8, generator=g)
    a, b = build(), build()
    out = a.encode(tiles)
    y = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
    assert y.shape == (3, a.out_dim), f"encode returned {y.shape}, expected (3, {a.out_dim})"
    _finite32(y, "image features")
    report.checks.append("shapes")
    assert np.array_equal(y, b.encode(tiles).detach().cpu().numpy()), "same seed, different features"
    assert a.identity() == b.identity(), "same weights, different identity()"
    report.checks.append("determinism")
    if hasattr(a, "state_dict"):
        fresh = build()  # its weights are overwritten by the round trip
        _roundtrip(a, fresh)
        assert np.array_equal(y, fresh.encode(tiles).detach().cpu().numpy()), "round trip changed the features"
        report.checks.append("save/load")


def _gene(build: Callable[[], Any], report: ConformanceReport, seed: int) -> None:
    sec = _section()
    a = build()
    x = np.asarray(a.fit_transform(sec))
    assert x.shape == (sec.n_spots, a.out_dim), f"features {x.shape}, expected ({sec.n_spots}, {a.out_dim})"
    _finite32(x, "gene features")
    report.checks.append("shapes")
    assert np.array_equal(x, np.asarray(build().fit_transform(sec))), "same input, different features"
    report.checks.append("determinism")
    if hasattr(a, "state") and hasattr(a, "load_state"):
        import json

        state = json.loads(json.dumps(a.state()))  # must be JSON-able
        restored = build().load_state(state)
        assert np.array_equal(x, np.asarray(restored.transform(sec))), "load_state() changed the features"
        report.checks.append("save/load")


def _builder(build: Callable[[], Any], report: ConformanceReport, seed: int) -> None:
    sec = _section()
    g = build().build(sec.coords, sec.spot_diameter)
    ei = np.asarray(g.edge_index)
    assert ei.ndim == 2 and ei.shape[0] == 2, f"edge_index has shape {ei.shape}, expected (2, E)"
    assert g.n_nodes == sec.n_spots and (ei.size == 0 or ei.max() < sec.n_spots), "edge index out of range"
    assert not (ei[0] == ei[1]).any(), "self loops present"
    pairs = set(map(tuple, ei.T.tolist()))
    assert all((j, i) in pairs for i, j in pairs), "graph is not symmetric"
    report.checks.append("shapes")
    assert np.array_equal(ei, np.asarray(build().build(sec.coords, sec.spot_diameter).edge_index)), "not deterministic"
    report.checks.append("determinism")


def _inputs(seed: int, n: int = 48):
    import torch

    from stmm_core.interfaces import GraphContext
    from stmm_core.testing.synthetic import make_synthetic_adata

    g = torch.Generator().manual_seed(seed)
    img = torch.randn(n, 12, generator=g)
    gene = torch.randn(n, 10, generator=g)
    coords = np.asarray(make_synthetic_adata(n_spots=n, n_genes=5, seed=seed, image=False).obsm["spatial"])
    from scipy.spatial import cKDTree

    pairs = cKDTree(coords).query_pairs(r=1.5 * float(np.median(cKDTree(coords).query(coords, k=2)[0][:, 1])),
                                        output_type="ndarray")
    ei = np.concatenate([pairs, pairs[:, ::-1]]).T.astype(np.int64)
    ctx = GraphContext(edge_index=torch.from_numpy(ei), n_nodes=n)
    return img, gene, ctx


def _fusion(build: Callable[[], Any], report: ConformanceReport, seed: int) -> None:
    img, gene, ctx = _inputs(seed)

    def run() -> tuple[Any, np.ndarray]:
        m = build()
        m.setup(img.shape[1], gene.shape[1])
        m.eval()
        import torch

        with torch.no_grad():
            return m, m(img, gene, ctx).numpy()

    a, y = run()
    assert y.shape == (img.shape[0], a.out_dim), f"fused {y.shape}, expected ({img.shape[0]}, {a.out_dim})"
    _finite32(y, "fused features")
    report.checks.append("shapes")
    b, y2 = run()
    assert np.array_equal(y, y2), "same seed, different output"
    report.checks.append("determinism")
    import torch

    fresh = build()
    fresh.setup(img.shape[1], gene.shape[1])
    torch.manual_seed(seed + 1)
    _roundtrip(a, fresh)
    fresh.eval()
    with torch.no_grad():
        assert np.array_equal(y, fresh(img, gene, ctx).numpy()), "round trip changed the output"
    report.checks.append("save/load")


def _graph_model(build: Callable[[], Any], report: ConformanceReport, seed: int) -> None:
    import torch

    x, target, ctx = _inputs(seed)

    def run() -> tuple[Any, np.ndarray]:
        m = build()
        m.setup(x.shape[1], target.shape[1], x.shape[0])
        m.eval()
        with torch.no_grad():
            return m, m(x, ctx).clustered().numpy()

    a, y = run()
    assert y.ndim == 2 and y.shape[0] == x.shape[0], f"embedding {y.shape}, expected ({x.shape[0]}, L)"
    _finite32(y, "embedding")
    a.train()
    terms = a.loss(a(x, ctx), target)
    assert "loss" in terms and torch.isfinite(terms["loss"]), "loss() must return a finite 'loss'"
    report.checks.append("shapes")
    assert np.array_equal(y, run()[1]), "same seed, different embedding"
    report.checks.append("determinism")
    fresh = build()
    fresh.setup(x.shape[1], target.shape[1], x.shape[0])
    _roundtrip(a, fresh)
    fresh.eval()
    with torch.no_grad():
        assert np.array_equal(y, fresh(x, ctx).clustered().numpy()), "round trip changed the embedding"
    report.checks.append("save/load")
    _partition(build, report, x, target, ctx)


def _partition(build: Callable[[], Any], report: ConformanceReport, x: Any, target: Any, ctx: Any) -> None:
    """A model that declares exact partition training must give the full-batch loss and gradient over partitions
    (one training step; the fusion is a per-spot pass-through). Undeclared or inexact models are not checked."""
    import torch

    from stmm_core.interfaces import Fusion, PartitionSupport
    from stmm_core.testing.partition import compare_partition_step

    model = build()
    support = type(model).partition_support(model.params)
    if support is None or support.hops is None or not support.exact:
        return

    class PassThrough(torch.nn.Module, Fusion):
        def __init__(self) -> None:
            torch.nn.Module.__init__(self)
            Fusion.__init__(self, None)

        @classmethod
        def partition_support(cls, params: Any) -> PartitionSupport:
            return PartitionSupport(hops=0)

        def setup(self, d_img: int | None, d_gene: int) -> None:
            self.out_dim = d_gene

        def forward(self, img: Any, gene: Any, graph: Any = None) -> Any:
            return gene

    torch.manual_seed(0)
    model.setup(x.shape[1], target.shape[1], x.shape[0])
    fusion = PassThrough()
    fusion.setup(None, x.shape[1])
    n = x.shape[0]
    coords = np.stack([np.arange(n) % 8, np.arange(n) // 8], 1).astype(float)  # any layout: partitions are cells
    d = compare_partition_step(fusion, model, None, x, target, coords, ctx.edge_index.numpy(), partition_size=12)
    assert d["loss_rel"] < 1e-5 and d["grad_rel"] < 1e-5, (
        f"declared exact over partitions, but the loss differs by {d['loss_rel']:.1e} and the gradient by "
        f"{d['grad_rel']:.1e} (relative) from full batch with a {d['hops']}-hop halo")
    report.checks.append("partition")


def _task(build: Callable[[], Any], report: ConformanceReport, seed: int) -> None:
    rng = np.random.default_rng(seed)
    emb = np.concatenate([rng.normal(c * 5.0, 1.0, (30, 6)) for c in range(3)]).astype(np.float32)
    labels = np.asarray(build().run(emb, 3, seed))
    assert labels.shape == (emb.shape[0],), f"labels {labels.shape}, expected ({emb.shape[0]},)"
    assert np.issubdtype(labels.dtype, np.integer), f"labels are {labels.dtype}, expected integers"
    report.checks.append("shapes")
    assert np.array_equal(labels, np.asarray(build().run(emb, 3, seed))), "same seed, different labels"
    report.checks.append("determinism")


_DRIVERS: dict[str, Callable[[Callable[[], Any], ConformanceReport, int], None]] = {
    "image_encoder": _image,
    "gene_encoder": _gene,
    "graph_builder": _builder,
    "fusion": _fusion,
    "graph_model": _graph_model,
    "task": _task,
}

__all__ = ["ConformanceReport", "check_component"]
