"""``report.html``: one self-contained page per run that a lab can share (every figure embedded as base64).

Sections: summary (scores, sizes, time), the domain map over the image (domains.png), the per-spot confidence
when the run has one (``confidence.png`` or ``obs["stmm_domain_confidence"]``), the loss curve, marker genes when
present (``markers.png`` / ``uns["stmm_markers"]``), metrics, the spec, and provenance (package versions, weights,
content hashes of the data and of the trained weights).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import anndata

    from stmm_core.data.section import Section

REPORT = "report.html"
_PACKAGES = ("stmm", "torch", "numpy", "scipy", "pandas", "anndata", "scanpy", "scikit-learn", "timm",
             "torch-geometric", "matplotlib")
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1180px;padding:24px;
color:#1d2433;background:#fff;line-height:1.45}
h1{font-size:1.6em;margin:.2em 0}h2{font-size:1.2em;border-bottom:2px solid #e3e7ef;padding-bottom:4px;margin-top:1.8em}
.sub{color:#5b6475}.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#f4f6fa;border-radius:8px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:1.35em}.card span{color:#5b6475;font-size:.85em}
img{max-width:100%;height:auto;border:1px solid #e3e7ef;border-radius:6px}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #e3e7ef;padding:3px 8px;text-align:left}
th{background:#f4f6fa}pre{background:#f4f6fa;padding:12px;border-radius:6px;overflow-x:auto;font-size:.82em}
.note{color:#5b6475;font-size:.9em}
"""
# Sets data-images-loaded on <body> once every figure has decoded (a headless browser can check it).
_JS = """
window.addEventListener('load',function(){var im=document.images,n=0;for(var i=0;i<im.length;i++){
if(im[i].complete&&im[i].naturalWidth>0){n++}}document.body.setAttribute('data-images-loaded',n+'/'+im.length);});
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _pre(x: str) -> str:
    return "<pre>" + html.escape(x, quote=False) + "</pre>"


def _png_tag(data: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    return out


def data_hash(section: "Section") -> str:
    """sha256 over what the model saw: spot ids, gene names, counts (CSR), positions and the image content."""
    h = hashlib.sha256()
    m = section.counts.tocsr()
    for part in ("\n".join(map(str, section.obs_names)).encode(), "\n".join(map(str, section.gene_names)).encode(),
                 np.ascontiguousarray(m.indptr, dtype=np.int64).tobytes(),
                 np.ascontiguousarray(m.indices, dtype=np.int64).tobytes(),
                 np.ascontiguousarray(m.data, dtype=np.float32).tobytes(),
                 np.ascontiguousarray(section.coords, dtype=np.float64).tobytes()):
        h.update(hashlib.sha256(part).digest())
    if section.image is not None:
        h.update(section.image.content_hash().encode())
        h.update(repr(section.image_scale).encode())
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _confidence_png(section: "Section", conf: np.ndarray) -> bytes:
    """Per-spot confidence over the image (used when the run folder has no confidence.png)."""
    from stmm_core.plots import _background, _plt

    plt = _plt()
    bg, f = _background(section)
    xy = section.coords * f
    fig, ax = plt.subplots(figsize=(6.5, 6))
    if bg is not None:
        ax.imshow(bg, alpha=0.6)
    else:
        ax.invert_yaxis()
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=conf, s=6, cmap="viridis", vmin=0, vmax=1, linewidths=0)
    fig.colorbar(sc, ax=ax, fraction=0.046, label="confidence")
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("per-spot domain confidence")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _markers_table(markers: Any, top: int = 5) -> str:
    import pandas as pd

    df = markers if isinstance(markers, pd.DataFrame) else None
    if df is None and isinstance(markers, dict):
        try:
            df = pd.DataFrame(markers)
        except ValueError:
            return _pre(json.dumps(markers, indent=1, default=str)[:5000])
    if df is None or not {"domain", "gene"} <= set(df.columns):
        return ""
    rows = []
    for dom, g in df.groupby("domain", sort=False):
        g = g.sort_values("rank") if "rank" in g else g
        rows.append(f"<tr><td>{_esc(dom)}</td><td>{_esc(', '.join(map(str, g['gene'].head(top))))}</td></tr>")
    return f"<table><tr><th>domain</th><th>top {top} marker genes</th></tr>{''.join(rows)}</table>"


def _summary_cards(metrics: dict[str, Any], adata: "anndata.AnnData") -> str:
    cards = [(f"{adata.n_obs:,}", "spots / bins"), (f"{adata.n_vars:,}", "genes")]
    if metrics.get("n_domains"):
        cards.append((str(metrics["n_domains"]), "domains"))
    c = metrics.get("clustering") or {}
    if "ari" in c:
        cards += [(f"{c['ari']:.3f}", f"ARI vs {c.get('label_column', 'labels')}"), (f"{c['nmi']:.3f}", "NMI")]
    if "wall_seconds" in metrics:
        cards.append((f"{metrics['wall_seconds']:.0f} s", "wall time"))
    if "peak_rss_mb" in metrics:
        cards.append((f"{metrics['peak_rss_mb']:.0f} MB", "peak memory"))
    return "".join(f'<div class="card"><b>{_esc(v)}</b><span>{_esc(k)}</span></div>' for v, k in cards)


def render_report(folder: Path, section: "Section", adata: "anndata.AnnData", metrics: dict[str, Any],
                  spec_json: str, title: str) -> str:
    """The HTML text of a run's report; figures are read from *folder* (domains.png, loss.png, …)."""
    folder = Path(folder)
    parts = [f"<h1>{_esc(title)}</h1><p class='sub'>section {_esc(section.name)} · written "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>",
             f"<div class='cards'>{_summary_cards(metrics, adata)}</div>"]

    def figure(name: str, heading: str, note: str = "") -> None:
        p = folder / name
        if p.is_file():
            parts.append(f"<h2>{_esc(heading)}</h2>{note}{_png_tag(p.read_bytes(), heading)}")

    figure("domains.png", "Spatial domains over the image",
           "<p class='note'>Colours and names are those of result.h5ad "
           "(<code>uns['stmm_domain_colors']</code>, <code>obs['stmm_domain_matched']</code>).</p>")
    if (folder / "confidence.png").is_file():
        figure("confidence.png", "Domain confidence")
    elif "stmm_domain_confidence" in adata.obs:
        conf = adata.obs["stmm_domain_confidence"].to_numpy(dtype=float)
        parts.append("<h2>Domain confidence</h2>"
                     f"<p class='note'>mean {np.nanmean(conf):.3f}; {np.mean(conf < 0.5) * 100:.1f} % of spots "
                     "below 0.5</p>" + _png_tag(_confidence_png(section, conf), "Domain confidence"))
    figure("loss.png", "Training loss")
    if (folder / "markers.png").is_file() or "stmm_markers" in adata.uns:
        parts.append("<h2>Marker genes</h2>")
        if (folder / "markers.png").is_file():
            parts.append(_png_tag((folder / "markers.png").read_bytes(), "Marker genes"))
        if "stmm_markers" in adata.uns:
            parts.append(_markers_table(adata.uns["stmm_markers"]))
    stages = metrics.get("stages") or []
    if stages:
        rows = "".join(f"<tr><td>{_esc(s['name'])}</td><td>{s['seconds']:.1f}</td>"
                       f"<td>{'%.0f' % s['peak_rss_mb'] if 'peak_rss_mb' in s else '–'}</td></tr>" for s in stages)
        parts.append("<h2>Stages</h2><table><tr><th>stage</th><th>seconds</th><th>peak RSS (MB)</th></tr>"
                     f"{rows}</table>")
    parts.append("<h2>Metrics</h2><details><summary>metrics.json</summary>"
                 + _pre(json.dumps(metrics, indent=2, sort_keys=True, default=str)) + "</details>")
    parts.append("<h2>Spec</h2><details><summary>spec.json (fit it again with <code>stmm fit spec.json</code>)"
                 "</summary>" + _pre(spec_json) + "</details>")
    prov = {"versions": _versions(), "data": {"source": metrics.get("data"), "content_sha256": data_hash(section)},
            "weights": _weights(folder, metrics, spec_json), "spec_hash": metrics.get("spec_hash"),
            "seed": metrics.get("seed"), "device": metrics.get("device")}
    parts.append("<h2>Provenance</h2>" + _pre(json.dumps(prov, indent=2, default=str)))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title>"
            f"<style>{_CSS}</style><script>{_JS}</script></head><body>{body}</body></html>\n")


def _weights(folder: Path, metrics: dict[str, Any], spec_json: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    model = folder / "model.safetensors"
    if model.is_file():
        out["model.safetensors sha256"] = _sha256_file(model)
    try:
        comp = json.loads(spec_json).get("components", {}).get("image") or {}
    except ValueError:
        comp = {}
    if comp:
        out["image encoder"] = {"name": comp.get("name"), "weights": (comp.get("params") or {}).get("weights")}
    img = (metrics.get("info") or {}).get("image") or {}
    if img.get("encoder"):
        out["image encoder identity"] = img["encoder"]
    return out


def write_report(folder: Path, section: "Section", adata: "anndata.AnnData", metrics: dict[str, Any],
                 spec_json: str, title: str) -> Path:
    """Write ``folder/report.html`` (call it after the figures are in *folder*)."""
    path = Path(folder) / REPORT
    path.write_text(render_report(folder, section, adata, metrics, spec_json, title), encoding="utf-8")
    return path
