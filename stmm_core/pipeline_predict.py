"""``stmm predict`` for any family with the ``expression`` capability: predictions for the spots of a section,
written atomically as AnnData (``X`` float32 predictions, ``var_names`` the genes, ``obsm["spatial"]`` full-res px,
``uns["stmm"]`` the spec hash and expression space) plus a PNG of a few genes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stmm_core.errors import StmmError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.pipeline_base import Pipeline


def predict_section_file(pipe: "Pipeline", output: Path, *, data: Path | None, device: str = "cpu",
                         options: dict[str, Any]) -> dict[str, Any]:
    import anndata
    import pandas as pd

    from stmm_core.atomic import atomic_file
    from stmm_core.pipeline.run import load_section
    from stmm_core.pipeline_base import predict_expression

    given = sorted(k for k, v in options.items() if v not in (None, False, [], ()) and k != "use_cache")
    if given:
        raise StmmError(f"{', '.join('--' + k.replace('_', '-') for k in given)}: the {pipe.spec.pipeline!r} pipeline "
                        "predicts for the spots of a --data section only")
    if data is None:
        raise StmmError(f"give --data SECTION: the {pipe.spec.pipeline!r} pipeline predicts for the spots of a section")
    output = Path(output)
    if output.suffix != ".h5ad":
        raise StmmError(f"-o {output}: the prediction is written as AnnData; use a .h5ad file name")
    section = load_section(data, keep_genes=True)
    pred = predict_expression(pipe, section, device=device)
    adata = anndata.AnnData(X=pred.values, obs=pd.DataFrame(index=pd.Index(section.obs_names.astype(str))),
                            var=pd.DataFrame(index=pd.Index(pred.genes)))
    adata.obsm["spatial"] = np.asarray(section.coords, np.float64)
    adata.uns["stmm"] = {"spec_hash": pipe.spec.hash(), "pipeline": pipe.spec.pipeline, "space": pred.space}
    with atomic_file(output) as tmp:
        adata.write_h5ad(tmp)
    return {"n_spots": int(adata.n_obs), "n_genes": int(adata.n_vars), "grid": False, "h5ad": str(output),
            "png": None, "tile_fullres_px": None}
