"""Writing a run folder atomically: everything goes to a hidden temp folder first and is moved into place
only when complete, so a failed run never leaves a half-written result that looks complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.pipeline.result import FitResult

RUN_FILES = ("result.h5ad", "spec.json", "model.safetensors", "metrics.json", "domains.png", "loss.png",
             "preprocess.json", "README.md", "manifest.json", "report.html", "result.zarr", "confidence.png",
             "markers.csv", "markers.png")


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write (through :mod:`stmm_core.atomic`)."""
    from stmm_core.atomic import write_text

    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def check_output_dir(out_dir: str | Path, flag: str = "-o", overwrite: bool = False, resume: bool = False,
                     inputs: "Sequence[str | Path]" = ()) -> Path:
    """Fail early (before any data is read) when *out_dir* cannot become this run's folder: see
    :func:`stmm_core.atomic.check_output` (writable, empty or an earlier run with ``--overwrite``). *inputs*: the
    ``--data`` paths; one inside an existing *out_dir* is refused, since the run replaces that folder whole."""
    from stmm_core.atomic import check_output
    from stmm_core.errors import StmmError

    path = check_output(out_dir, flag=flag, kind="dir", overwrite=overwrite, resume=resume)
    if path.is_dir() and not resume:
        root = path.resolve()
        for item in inputs:
            where = Path(str(item)).expanduser().resolve()
            if where == root or where.is_relative_to(root):
                raise StmmError(f"--data {item} lies inside {flag} {out_dir}, which this run replaces whole; copy the "
                                f"input out of that folder first, or give another {flag}")
    return path


def _array_bytes(adata: Any) -> int:
    """Bytes of the arrays an AnnData writes (X, layers, obsm, obsp; sparse: data + indices + indptr)."""
    import scipy.sparse as sp

    def size(a: Any) -> int:
        if sp.issparse(a):
            return int(a.data.nbytes + a.indices.nbytes + a.indptr.nbytes)
        return int(getattr(a, "nbytes", 0))

    arrays = [adata.X, *adata.layers.values(), *adata.obsm.values(), *adata.obsp.values()]
    return sum(size(a) for a in arrays if a is not None) + int(adata.obs.memory_usage(deep=True).sum())


def check_free_space(folder: Path, need_bytes: int, out_dir: Path, flag: str = "-o") -> None:
    """Refuse, before writing, a disk without room for about *need_bytes* (+ 20 % and 8 MB for plots and
    metadata): a full disk part-way through an HDF5 write ends in a flood of h5py errors, not one message."""
    import shutil

    need = int(need_bytes * 1.2) + (8 << 20)
    free = shutil.disk_usage(folder).free
    if free < need:
        from stmm_core.errors import StmmError

        raise StmmError(f"{flag} {out_dir}: {free / 2**20:.1f} MB free on that disk, and this run's files need about "
                        f"{need / 2**20:.1f} MB; free space there or give {flag} a folder on another disk")


def check_room_before_fit(out_dir: Path, section: "Section", flag: str = "-o") -> None:
    """Refuse, before the fit starts, an output disk that cannot hold even the section's own arrays (result.h5ad
    carries them): a user learns about a full disk in a second, not after the fit. The exact size is checked
    again before writing (:func:`write_run`)."""
    folder = Path(out_dir).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    adata = getattr(section, "adata", None)
    if adata is not None:
        need = _array_bytes(adata)
    else:
        c = section.counts
        need = int(c.data.nbytes + c.indices.nbytes + c.indptr.nbytes)
    check_free_space(folder, need, Path(out_dir), flag)


def write_run(out_dir: Path, section: "Section", result: "FitResult", metrics: dict[str, Any],
              label_column: str | None = None, zarr: bool = False) -> list[Path]:
    """Write the run folder; returns the files written. ``zarr``: also result.zarr (SpatialData)."""
    from safetensors.torch import save_file

    from stmm_core.plots import plot_domains, plot_loss

    from stmm_core.atomic import atomic_dir

    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as stage:
        from stmm_core.domain_colors import domain_palette
        from stmm_core.pipeline.scverse import scverse_adata

        truth = None
        if label_column and section.obs is not None and label_column in section.obs:
            truth = section.obs[label_column].to_numpy()
        palette = domain_palette(result.labels, truth) if result.labels is not None else None
        adata = scverse_adata(section, result.embedding, result.labels, palette, label_column,
                              getattr(result, "graph", None),
                              {"spec_hash": result.spec.hash(), "spec": result.spec.canonical_json()})
        from stmm_core.pipeline.run_extras import add_extras_to_adata

        add_extras_to_adata(adata, result)  # consensus confidence, per-seed labels, marker genes
        check_free_space(stage, _array_bytes(adata) + sum(int(v.numel()) * v.element_size()
                                                          for v in result.state_dict.values()), out_dir)
        adata.write_h5ad(stage / "result.h5ad")
        if zarr:
            from stmm_core.data.spatialdata_io import ZARR_RESULT, write_result_zarr

            write_result_zarr(stage / ZARR_RESULT, adata, section)
        from stmm_core.faults import point

        point("write")
        (stage / "spec.json").write_text(result.spec.pretty_json() + "\n")
        save_file(result.state_dict, str(stage / "model.safetensors"),
                  metadata={"spec_hash": result.spec.hash(), "format": "stmm-graph-fusion-v1"})
        if result.gene_state is not None:
            write_json(stage / "preprocess.json", result.gene_state)
        write_json(stage / "metrics.json", metrics)
        if result.labels is not None:
            from stmm_core.pipeline.image_caveats import short_caveat

            title = f"stmm {result.spec.recipe or 'pipeline'} · {section.name}"
            caveat = short_caveat(metrics.get("image_caveat"))
            plot_domains(section, result.labels, stage / "domains.png", truth=truth, title=title,
                         scores=metrics.get("clustering"), caveat=caveat)
        graph = result.spec.components.get("graph")
        gp = graph.params if graph is not None else {}
        loss_weights = {term: float(gp[param]) for term, param in (("kl", "kl_weight"), ("dec", "dec_weight"),
                        ("recon", "recon_weight"), ("contrastive", "contrastive_weight")) if param in gp}
        plot_loss(result.history, stage / "loss.png", weights=loss_weights)
        from stmm_core.pipeline.run_extras import write_extras

        write_extras(stage, section, result, metrics, truth)  # confidence.png, markers.csv, markers.png
        from stmm_core.report_html import write_report

        write_report(stage, section, adata, metrics, result.spec.pretty_json(),  # last: it embeds the figures
                     title=f"stmm {result.spec.recipe or 'pipeline'} · {section.name}")
        from stmm_core.hub.pipeline_dir import finish_pipeline_dir

        finish_pipeline_dir(stage, result.spec, metrics)  # model card + manifest: the run folder is pushable
        names = sorted(f.name for f in stage.iterdir())
    return [out_dir / n for n in names]
