"""Write a synthetic Visium HD Space Ranger 3 output folder in the documented layout (tests and benchmarks).

``outs/binned_outputs/square_{002,008,016}um/`` each with ``filtered_feature_bc_matrix.h5`` (10x v3 HDF5: CSC
features × barcodes, gzip), ``spatial/tissue_positions.parquet`` (every bin of the capture area, ``in_tissue``
0/1; the matrix holds the in-tissue bins), ``spatial/scalefactors_json.json`` (``microns_per_pixel``,
``bin_size_um``, ``spot_diameter_fullres``, ``tissue_hires_scalef``, ``tissue_lowres_scalef``,
``regist_target_img_scalef``, ``fiducial_diameter_fullres``), ``tissue_hires_image.png``/``tissue_lowres_image.png``;
optionally a full-resolution microscope TIFF beside ``outs/``. Barcodes are ``s_008um_00012_00034-1``.

The data are synthetic: smooth spatial domains (the same map at every bin size, counts of each size drawn
independently), negative-binomial-like depths, a slightly rotated bin grid. No real Visium HD data exist here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MICRONS_PER_PIXEL = 0.2738
ROTATION_DEG = 0.3


def _domain(u: np.ndarray, v: np.ndarray, n_domains: int) -> np.ndarray:
    """Curved bands over the unit square (like cortical layers)."""
    r = np.hypot(u - 0.1, v - 1.1)
    return np.clip((r / 1.3 * n_domains).astype(int), 0, n_domains - 1)


def _image(side_px: int, scalef: float, origin: np.ndarray, rot: np.ndarray, extent_px: float, n_domains: int,
           rng: np.random.Generator) -> np.ndarray:
    """An H&E-like picture whose colours follow the same domains as the counts (in the grid's frame)."""
    palette = rng.uniform(90, 230, size=(n_domains, 3))
    out = np.empty((side_px, side_px, 3), dtype=np.uint8)
    for r0 in range(0, side_px, 256):  # row strips: a 6,000-px image without GB-sized temporaries
        yy, xx = np.mgrid[r0:min(side_px, r0 + 256), 0:side_px] / scalef
        local = (np.stack([xx.ravel(), yy.ravel()], 1) - origin) @ rot  # full-res px → grid frame
        u, v = (local / extent_px).T
        dom = _domain(u, v, n_domains).reshape(xx.shape)
        img = palette[dom] + 10 * np.sin(xx * scalef / side_px * 40)[..., None]
        out[r0:r0 + xx.shape[0]] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def _write_h5(path: Path, counts_csc, barcodes: list[str], gene_ids: list[str], names: list[str]) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        kw = {"compression": "gzip", "compression_opts": 4}
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"), **kw)
        g.create_dataset("data", data=counts_csc.data.astype(np.int32), **kw)
        g.create_dataset("indices", data=counts_csc.indices.astype(np.int64), **kw)
        g.create_dataset("indptr", data=counts_csc.indptr.astype(np.int64), **kw)
        g.create_dataset("shape", data=np.array(counts_csc.shape, dtype=np.int32))
        feat = g.create_group("features")
        feat.create_dataset("id", data=np.array(gene_ids, dtype="S"), **kw)
        feat.create_dataset("name", data=np.array(names, dtype="S"), **kw)
        feat.create_dataset("feature_type", data=np.array(["Gene Expression"] * len(gene_ids), dtype="S"), **kw)
        feat.create_dataset("genome", data=np.array(["GRCh38"] * len(gene_ids), dtype="S"), **kw)
        feat.create_dataset("_all_tag_keys", data=np.array([b"genome"]))
        f.attrs["library_ids"] = np.array([b"synthetic"])


def write_visium_hd(
    root: str | Path,
    capture_um: float = 400.0,
    bin_sizes: tuple[int, ...] = (2, 8, 16),
    n_genes: int = 200,
    n_domains: int = 4,
    umis_per_um2: float = 1.0,
    hires_side: int = 600,
    lowres_side: int = 150,
    full_res_tiff: bool = False,
    seed: int = 0,
    tissue_radius: float = 0.47,
) -> Path:
    """Write ``root/outs/…`` for a square capture area of side *capture_um*; returns ``root/outs``.

    ``umis_per_um2``: mean UMIs per µm² (1.0 gives ~64 UMIs in an 8 µm bin). The in-tissue region is a disc of
    radius *tissue_radius* (capture side = 1) clipped to the capture area: 0.47 covers ~70 %, 0.56 ~90 %.
    """
    import pandas as pd
    import scipy.sparse as sp
    from PIL import Image

    rng = np.random.default_rng(seed)
    outs = Path(root) / "outs"
    extent_px = capture_um / MICRONS_PER_PIXEL
    origin = np.array([300.0, 200.0])  # full-res px of the grid corner on the microscope image
    theta = np.deg2rad(ROTATION_DEG)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    full_side = int(np.ceil(extent_px + 2 * origin.max()))
    hires_scalef = hires_side / full_side
    lowres_scalef = lowres_side / full_side
    hires = _image(hires_side, hires_scalef, origin, rot, extent_px, n_domains, rng)
    lowres = np.asarray(Image.fromarray(hires).resize((lowres_side, lowres_side), Image.BILINEAR))
    gene_ids = [f"ENSG{j:011d}" for j in range(n_genes)]
    names = [f"GENE{j}" for j in range(n_genes)]
    base = rng.gamma(0.5, 1.0, size=n_genes)
    probs = np.tile(base, (n_domains, 1))
    for k in range(n_domains):
        probs[k, rng.choice(n_genes, size=max(1, n_genes // 10), replace=False)] *= 4.0
    probs /= probs.sum(1, keepdims=True)
    for b in bin_sizes:
        n = int(capture_um // b)
        rows, cols = np.divmod(np.arange(n * n), n)
        local = np.stack([(cols + 0.5) * b, (rows + 0.5) * b], 1) / MICRONS_PER_PIXEL  # (x, y) px
        xy = local @ rot.T + origin
        u, v = (cols + 0.5) / n, (rows + 0.5) / n
        in_tissue = (np.hypot(u - 0.5, v - 0.5) < tissue_radius).astype(np.int32)
        dom = _domain(u, v, n_domains)
        barcodes = np.array([f"s_{b:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols)], dtype=object)
        folder = outs / "binned_outputs" / f"square_{b:03d}um"
        (folder / "spatial").mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"barcode": barcodes, "in_tissue": in_tissue, "array_row": rows.astype(np.int32),
                      "array_col": cols.astype(np.int32), "pxl_row_in_fullres": xy[:, 1],
                      "pxl_col_in_fullres": xy[:, 0]}).to_parquet(folder / "spatial" / "tissue_positions.parquet",
                                                                   index=False)
        sel = np.flatnonzero(in_tissue)
        totals = rng.poisson(umis_per_um2 * b * b * rng.lognormal(0, 0.3, size=len(sel)))
        bin_idx = np.repeat(np.arange(len(sel)), totals)
        genes = np.empty(len(bin_idx), dtype=np.int64)
        dom_of = np.repeat(dom[sel].astype(np.int8), totals)
        for k in range(n_domains):
            m = dom_of == k
            genes[m] = rng.choice(n_genes, size=int(m.sum()), p=probs[k])
        del dom_of
        m = sp.csc_matrix((np.ones(len(bin_idx), np.int32), (genes, bin_idx)), shape=(n_genes, len(sel)))
        m.sum_duplicates()
        _write_h5(folder / "filtered_feature_bc_matrix.h5", m, list(barcodes[sel]), gene_ids, names)
        sf = {"spot_diameter_fullres": b / MICRONS_PER_PIXEL, "bin_size_um": float(b),
              "microns_per_pixel": MICRONS_PER_PIXEL, "regist_target_img_scalef": hires_scalef,
              "tissue_lowres_scalef": lowres_scalef, "tissue_hires_scalef": hires_scalef,
              "fiducial_diameter_fullres": 2 * b / MICRONS_PER_PIXEL}
        (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(sf, indent=2))
        Image.fromarray(hires).save(folder / "spatial" / "tissue_hires_image.png")
        Image.fromarray(lowres).save(folder / "spatial" / "tissue_lowres_image.png")
    if full_res_tiff:
        import tifffile

        img = np.asarray(Image.fromarray(hires).resize((full_side, full_side), Image.BILINEAR))
        tifffile.imwrite(Path(root) / "microscope.tif", img, tile=(256, 256))
    return outs
