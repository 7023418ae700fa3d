"""Predict expression from an H&E image with a trained Magic run.

Spots come from ``--coords`` (a table id, x, y in full-res px), from ``--data`` (a section with its image), or,
when neither is given, from a square grid (pitch = one tile) over the tissue of ``--image`` (tissue found by
colour saturation on a thumbnail, Otsu threshold). Output: an AnnData (``X`` = predicted
log1p-normalised expression of the run's targets, ``obsm["spatial"]`` full-res px, a downsampled image in
``uns["spatial"]``) and a PNG of a few predicted genes over the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from stmm_core.errors import DataError, StmmError

if TYPE_CHECKING:  # pragma: no cover
    import anndata

    from stmm_core.data.image import ImageSource
    from stmm_core.data.section import Section

#: Longest side of the image stored in the output AnnData and used for the tissue mask / plots.
THUMB_SIDE = 2000


def thumbnail(image: "ImageSource", max_side: int = THUMB_SIDE) -> tuple[np.ndarray, float]:
    """A downsampled RGB view ``(h, w, 3)`` uint8 and the factor image px → view px."""
    from PIL import Image

    arr = image.read_region(0, 0, image.width, image.height)
    f = min(1.0, max_side / max(image.width, image.height))
    if f < 1.0:
        size = (max(1, int(round(image.width * f))), max(1, int(round(image.height * f))))
        arr = np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BOX))
    return arr, f


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids) / np.maximum(w0, 1)
    m1 = (np.sum(hist * mids) - np.cumsum(hist * mids)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(mids[int(np.argmax(between))])


def tissue_grid(image: "ImageSource", scale: float, tile_fullres_px: float, min_tissue: float = 0.5) -> np.ndarray:
    """Centres ``(M, 2)`` (full-res px) of a square grid of pitch *tile_fullres_px* whose tiles are at least
    *min_tissue* tissue (saturation above the Otsu threshold of the thumbnail)."""
    thumb, f = thumbnail(image)
    rgb = thumb.astype(np.float32)
    sat = rgb.max(-1) - rgb.min(-1)
    mask = sat > max(_otsu(sat.ravel()), 8.0)
    pitch = tile_fullres_px
    w_full, h_full = image.width / scale, image.height / scale
    xs = np.arange(pitch / 2, w_full - pitch / 2 + 1e-9, pitch)
    ys = np.arange(pitch / 2, h_full - pitch / 2 + 1e-9, pitch)
    centres = []
    k = scale * f  # full-res px → thumbnail px
    half = max(pitch * k / 2, 0.5)
    for y in ys:
        for x in xs:
            x0, x1 = int(max(0, np.floor(x * k - half))), int(min(mask.shape[1], np.ceil(x * k + half)))
            y0, y1 = int(max(0, np.floor(y * k - half))), int(min(mask.shape[0], np.ceil(y * k + half)))
            if x1 > x0 and y1 > y0 and mask[y0:y1, x0:x1].mean() >= min_tissue:
                centres.append((x, y))
    return np.asarray(centres, dtype=np.float64).reshape(-1, 2)


def check_inside(coords: np.ndarray, image: "ImageSource", scale: float, where: str) -> None:
    """Every spot centre (full-res px × scale) must fall inside the image, else one clear :class:`DataError`."""
    xy = np.asarray(coords, np.float64) * scale
    inside = (xy[:, 0] >= -1) & (xy[:, 0] <= image.width + 1) & (xy[:, 1] >= -1) & (xy[:, 1] <= image.height + 1)
    if not inside.all():
        raise DataError(
            f"{where}: {int((~inside).sum())} of {len(xy)} spots fall outside the {image.width}×{image.height} px "
            f"image after scaling by {scale:g} (scaled x {xy[:, 0].min():.0f}–{xy[:, 0].max():.0f}, y "
            f"{xy[:, 1].min():.0f}–{xy[:, 1].max():.0f}); the image does not match the coordinates: check --image "
            "and --scale (full-resolution px → image px)"
        )


def image_section(image: str | Path, scale: float, coords: np.ndarray, ids: Sequence[str],
                  spot_diameter: float | None) -> "Section":
    """A count-free :class:`Section` for prediction from an image and spot centres."""
    import pandas as pd
    import scipy.sparse as sp

    from stmm_core.data.image import open_image
    from stmm_core.data.section import Section

    img = open_image(image)
    check_inside(coords, img, scale, str(image))
    idx = pd.Index([str(i) for i in ids])
    return Section(name=Path(str(image)).stem, obs_names=idx, counts=sp.csr_matrix((len(idx), 0), dtype=np.float32),
                   gene_names=pd.Index([]), coords=np.asarray(coords, np.float64), image=img,
                   image_scale=float(scale), spot_diameter=spot_diameter, obs=pd.DataFrame(index=idx))


def plot_genes(adata: "anndata.AnnData", genes: Sequence[str], path: Path, title: str) -> None:
    """Predicted expression of *genes* over the stored thumbnail, one panel per gene."""
    from stmm_core.plots import _plt

    plt = _plt()
    lib = next(iter(adata.uns["spatial"]))
    entry = adata.uns["spatial"][lib]
    img = entry["images"]["hires"]
    f = float(entry["scalefactors"]["tissue_hires_scalef"])
    diam = float(entry["scalefactors"].get("spot_diameter_fullres", 0)) * f
    xy = np.asarray(adata.obsm["spatial"]) * f
    n = len(genes)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.4), squeeze=False)
    size = max(2.0, min(80.0, (diam * 0.9 * 72 / 100) ** 2)) if diam else 10.0
    for ax, g in zip(axes[0], genes):
        ax.imshow(img, alpha=0.55)
        v = np.asarray(adata[:, g].X).ravel()
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=v, s=size, cmap="magma", linewidths=0)
        fig.colorbar(sc, ax=ax, fraction=0.04, pad=0.01)
        ax.set_title(g)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def predict_to_file(
    run_dir: str | Path,
    output: str | Path,
    *,
    image: str | Path | None = None,
    scale: float | None = None,
    coords: str | Path | None = None,
    data: str | Path | None = None,
    tile_px: float | None = None,
    genes: Sequence[str] | None = None,
    use_cache: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Predict every spot (or a tissue grid) and write ``output`` (.h5ad) plus ``output`` with ``.png``."""
    import anndata
    import pandas as pd

    from stmm_core.data.cache import FeatureCache
    from stmm_core.data.readers import read_coords_table
    from stmm_magic.data import section_tiles, tile_size_fullres
    from stmm_magic.pipeline import image_input_px, read_sections
    from stmm_magic.run_io import load_run

    log = log or (lambda m: None)
    output = Path(output)
    if output.suffix != ".h5ad":
        raise StmmError(f"-o {output}: the prediction is written as AnnData; use a .h5ad file name")
    if data is None and image is None:
        raise StmmError("give --data SECTION (with its image) or --image HE.tif|.jpg (with --coords, or a tissue grid)")
    run = load_run(run_dir, stages=(2,))
    spec = run.spec
    unknown = [g for g in (genes or []) if g not in set(run.targets)]
    if unknown:  # before any work
        raise StmmError(f"--gene {unknown[0]!r} is not a target of this run (targets: {', '.join(run.targets[:8])}, …)")
    trained_px = float(run.meta["tiles"]["fullres_px"])
    grid = False
    if data is not None:
        if coords is not None:
            raise StmmError("--coords is for --image; a --data section brings its own spot coordinates")
        if image is not None:
            from stmm_core.pipeline.run import load_section

            section = load_section(data, image=image, scale=scale)
        else:
            section = read_sections([data])[0]
        if section.image is None:
            raise DataError(f"{data} has no image; pass --image and --scale")
        size = tile_px or tile_size_fullres(section, spec.tiles.size, spec.tiles.size_factor)
    else:
        s = 1.0 if scale is None else float(scale)
        size = float(tile_px or trained_px)
        if coords is not None:
            pos = read_coords_table(coords)
            section = image_section(image, s, pos[["x", "y"]].to_numpy(), pos.index, size)
        else:
            from stmm_core.data.image import open_image

            centres = tissue_grid(open_image(image), s, size)
            if len(centres) == 0:
                raise DataError(f"{image}: no tissue found for a grid of {size:g} px tiles; pass --coords")
            ids = [f"grid_{int(round(x))}x{int(round(y))}" for x, y in centres]
            section = image_section(image, s, centres, ids, size)
            grid = True
    if abs(size - trained_px) > 0.25 * trained_px:
        log(f"warning: tiles of {size:.0f} full-res px, but the model was trained on {trained_px:.0f} px tiles; "
            "pass --tile-px if the image resolution differs")
    tiles = torch.from_numpy(section_tiles(section, size, image_input_px(spec), spec.tiles.pad_value,
                                           FeatureCache() if use_cache else None))
    pred = run.stage2.predict(tiles).numpy().astype(np.float32)

    thumb, f = thumbnail(section.image)
    lib = section.name
    adata = anndata.AnnData(X=pred, obs=pd.DataFrame(index=pd.Index(section.obs_names.astype(str))),
                            var=pd.DataFrame(index=pd.Index(run.targets)))
    adata.obsm["spatial"] = np.asarray(section.coords, np.float64)
    adata.uns["spatial"] = {lib: {"images": {"hires": thumb},
                                  "scalefactors": {"tissue_hires_scalef": float(section.image_scale) * f,
                                                   "spot_diameter_fullres": float(size)}}}
    target_sum = float(spec.components["decoder"].params["target_sum"])
    adata.uns["stmm_magic"] = {"run": str(Path(run_dir).resolve()), "spec_hash": spec.hash(),
                               "target_space": "log1p(counts / total * %g)" % target_sum, "grid": grid,
                               "tile_fullres_px": float(size), "image_init": run.meta.get("image_init", {})}
    show = list(genes) if genes else (run.eval_hvg[:4] or run.targets[:4])
    png = output.with_suffix(".png")
    from stmm_core.atomic import atomic_files

    with atomic_files(output, png) as (tmp_h5ad, tmp_png):  # both appear together, or neither
        adata.write_h5ad(tmp_h5ad)
        plot_genes(adata, show, tmp_png, f"predicted log1p expression ({'tissue grid' if grid else 'spots'})")
    return {"n_spots": int(adata.n_obs), "n_genes": int(adata.n_vars), "grid": grid, "h5ad": str(output),
            "png": str(png), "tile_fullres_px": float(size)}
