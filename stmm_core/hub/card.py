"""The model card (``README.md``) of a saved pipeline: YAML front matter the Hub indexes, then prose.

Front matter: ``library_name: stmm``, ``tags`` (stmm, spatial-transcriptomics, the recipe and components),
``license``, ``datasets``, ``metrics`` and an ``stmm`` block (pipeline type, spec hash, measured scores).
The prose says what the pipeline is, how to pull it pinned to a commit and run it, and what it was
trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.spec import PipelineSpec

CARD = "README.md"
DEFAULT_LICENSE = "other"



def valid_scores(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The clustering scores worth publishing: none when they were computed on fewer than two labelled classes
    or no labelled spot (older run folders could hold such a meaningless 'ARI 1.000')."""
    c = (metrics or {}).get("clustering") or {}
    if not c or int(c.get("n_labelled", 1)) < 1 or int(c.get("n_true_domains", 2)) < 2:
        return {}
    return c


def card_metadata(spec: "PipelineSpec", metrics: dict[str, Any] | None = None, *, license: str | None = None,
                  datasets: list[str] | None = None) -> dict[str, Any]:
    """The YAML front matter as a dict."""
    tags = ["stmm", "spatial-transcriptomics", spec.pipeline]
    if spec.recipe and spec.recipe not in tags:
        tags.append(spec.recipe)
    for ref in spec.components.values():
        if ref is not None and ref.name not in tags:
            tags.append(ref.name)
    meta: dict[str, Any] = {"library_name": "stmm", "tags": tags, "license": license or DEFAULT_LICENSE}
    if datasets:
        meta["datasets"] = list(datasets)
    scores = valid_scores(metrics)
    names = [k for k in ("ari", "nmi") if k in scores]
    if names:
        meta["metrics"] = names
    block: dict[str, Any] = {"pipeline": spec.pipeline, "spec_hash": spec.hash()}
    if spec.recipe:
        block["recipe"] = spec.recipe
    if names:
        block["results"] = {k: round(float(scores[k]), 4) for k in names}
        if scores.get("label_column"):
            block["results"]["label_column"] = scores["label_column"]
    meta["stmm"] = block
    return meta


def _value(v: Any) -> str:
    """A parameter value in full, as JSON (no truncation)."""
    import json

    return json.dumps(v, sort_keys=True, separators=(", ", ": "))


def _settings(values: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={_value(v)}`" for k, v in sorted(values.items())) or "(none)"


#: References cited by the card: methods by recipe/component name, data by section name.
METHOD_REFS: dict[str, str] = {
    "stereomm": "StereoMM: Luo et al., a graph fusion model for integrating spatial transcriptomic data and "
                "pathological images; code STOmics/StereoMMv1 (stmm's recipe fixes the bugs listed in its docs).",
    "magic": "Magic: cat-moom/Magic on GitHub (stage 1 train-mymodel.py, stage 2 train-decoder.py).",
    "graphst": "GraphST: Long, Ang, Li et al., Spatially informed clustering, integration, and deconvolution of "
               "spatial transcriptomics with GraphST. Nat. Commun. 14, 1155 (2023). doi:10.1038/s41467-023-36796-3",
    "vgae": "VGAE: Kipf & Welling, Variational Graph Auto-Encoders. NIPS Workshop on Bayesian Deep Learning (2016). "
            "arXiv:1611.07308",
}
DATA_REFS: dict[str, str] = {
    "dlpfc": "DLPFC (10x Visium, human dorsolateral prefrontal cortex): Maynard, Collado-Torres et al., "
             "Transcriptome-scale spatial gene expression in the human dorsolateral prefrontal cortex. Nat. Neurosci. "
             "24, 425-436 (2021). doi:10.1038/s41593-020-00787-0",
    "her2st": "HER2ST (HER2-positive breast tumours, spatial transcriptomics): Andersson, Larsson et al., Spatial "
              "deconvolution of HER2-positive breast cancer delineates tumor-associated cell type interactions. Nat. "
              "Commun. 12, 6012 (2021). doi:10.1038/s41467-021-26271-2",
}


def _methods(spec: "PipelineSpec") -> list[str]:
    names = {spec.recipe or ""} | {r.name for r in spec.components.values() if r is not None}
    if "attention" in names and "vgae" in names:
        names.add("stereomm")
    if "contrastive-gae" in names:
        names.add("graphst")
    names.add(spec.pipeline)  # a family may be cited by its own name
    return [ref for key, ref in METHOD_REFS.items() if key in names]


def _data(section: str, data: str) -> list[str]:
    import re

    text = f"{section} {data}".lower()
    out = []
    if "dlpfc" in text or re.search(r"\b151(50[7-9]|51[0-9]|66[69]|67[0-6])\b", text):
        out.append(DATA_REFS["dlpfc"])
    if "her2" in text or re.fullmatch(r"[a-h][1-6]", section.strip().lower()):
        out.append(DATA_REFS["her2st"])
    return out


def _defaults_note(recipe: str | None) -> str | None:
    if not recipe:
        return None
    try:
        from stmm_core.recipes import all_recipes

        return all_recipes().get(recipe, {}).get("defaults_note")
    except Exception:  # noqa: BLE001 - a card is still written without the plug-in registry
        return None


def render_card(spec: "PipelineSpec", metrics: dict[str, Any] | None = None, *, repo_id: str | None = None,
                license: str | None = None, datasets: list[str] | None = None,
                figures: list[str] | None = None) -> str:
    """The whole README.md text. *figures*: image files next to the card to embed (e.g. ``domains.png``)."""
    import yaml

    meta = card_metadata(spec, metrics, license=license, datasets=datasets)
    metrics = metrics or {}
    title = f"stmm {spec.recipe or spec.pipeline} pipeline"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "", f"# {title}", ""]
    lines += [
        f"A trained stmm **{spec.pipeline}** pipeline"
        + (f" (recipe `{spec.recipe}`)" if spec.recipe else " (composed from components, not a tuned recipe)")
        + ". The spec names its components through the local stmm catalogue; the weights are safetensors; every "
        "file is listed with its sha256 in `manifest.json` and checked when the pipeline is pulled. Nothing in this "
        "repository is executed.",
        "",
    ]
    if spec.note:
        lines += [f"Composition: {spec.note}.", ""]
    caveat = (metrics.get("image_caveat") or {}).get("line")
    if caveat:
        lines += [f"> **Note:** {caveat}.", ""]
    for fig in figures or []:
        lines += [f"![{fig}]({fig})", ""]
    lines += ["## Components and settings", ""]
    for slot, ref in spec.components.items():
        if ref is None:
            lines.append(f"- **{slot}**: none")
            continue
        lines.append(f"- **{slot}** `{ref.name}`: {_settings({k: v for k, v in ref.params.items()})}")
    for block in ("tiles", "features", "domains", "train"):
        values = getattr(spec, block).model_dump(mode="json")
        lines.append(f"- **{block}**: {_settings(values)}")
    lines += ["", f"Spec hash `{spec.hash()}` (sha256 of `spec.json` without the stmm version).", ""]
    where = repo_id or "LAB/NAME"
    lines += [
        "## Install stmm and load this pipeline",
        "",
        "stmm is installed from its source repository (it is not published on PyPI). With a clone of it:",
        "",
        "```bash",
        "cd stmm && ./dev env                        # creates ./.venv with the pinned versions (or: pip install .)",
        "source .venv/bin/activate",
    ]
    if repo_id:
        lines.append(f"stmm pull {where}@COMMIT -o pipeline/     # COMMIT: this repository's commit "
                     "('Files and versions' on the Hub)")
    else:
        lines.append("stmm pull LAB/NAME@COMMIT -o pipeline/     # once pushed with 'stmm push RUN_FOLDER LAB/NAME'; "
                     "or use the run folder itself")
    lines += _use_lines(spec)
    lines += [
        "```",
        "",
        "A pinned pull checks every file's sha256; an unpinned one warns. Offline: `stmm pull ... --offline` (or "
        "`HF_HUB_OFFLINE=1`) reads only the local cache. In Python: "
        "`stmm_core.pipeline_base.load_trained(folder)` then its capability methods (`embed`, `predict_expression`, "
        "`score`).",
        "",
    ]
    info = metrics.get("info") or {}
    if info or metrics.get("clustering"):
        lines += ["## Training data and results", ""]
        if metrics.get("section"):
            lines.append(f"- section: `{metrics['section']}` ({info.get('n_spots', '?')} spots, "
                         f"{info.get('n_genes', '?')} genes)")
        if (info.get("image") or {}).get("encoder"):
            cav = metrics.get("image_caveat") or {}
            px = f"; {cav['spot_image_px']} image px per spot" if cav.get("spot_image_px") is not None else ""
            lines.append(f"- image features: `{info['image']['encoder']}`{px}")
        c = valid_scores(metrics)
        if c:
            lines.append(f"- domains: K={metrics.get('n_domains')}, ARI {c['ari']:.3f}, NMI {c['nmi']:.3f} against "
                         f"`obs[{c.get('label_column')!r}]` ({c.get('n_labelled', '?')} labelled spots)")
        elif metrics.get("n_domains"):
            lines.append(f"- domains: K={metrics.get('n_domains')} (no labels given: no ARI/NMI)")
        if metrics.get("seed") is not None:
            lines.append(f"- seed {metrics['seed']}, stmm {metrics.get('stmm_version', '?')}, "
                         f"{metrics.get('wall_seconds', 0):.1f} s wall time")
        lines.append("")
    lines += ["## Limitations", ""]
    cav = metrics.get("image_caveat") or {}
    if cav.get("random_weights"):
        lines.append("- The image encoder ran on **random weights** (no pretrained weights were used): its features "
                     "are a fixed random projection of the pixels, so the image adds little; with pretrained weights "
                     "(`--set image.weights=pretrained`) the result will differ.")
    if cav.get("coarse"):
        lines.append(f"- The image was **coarse**: a spot spans {cav.get('spot_image_px')} image pixels (fewer than "
                     f"{cav.get('min_spot_px', 16):.0f}), so the encoder saw an upsampled blur of the spot's colour. "
                     "Fit on a hires or full-resolution image for the image to carry tissue structure.")
    note = _defaults_note(spec.recipe)
    if note:
        lines.append(f"- Tuning: {note}.")
    elif not spec.recipe:
        lines.append("- Tuning: not a tuned recipe; its settings are component defaults or chosen by hand.")
    if metrics.get("clustering") or metrics.get("n_domains") is not None:  # only for fits that clustered domains
        lines.append("- Domains are unsupervised clusters of one section; their number K is given (or chosen by "
                     "`-k auto`), and scores against labels say how well they match one annotation of this section only.")
    lines += [
        "- Measured comparisons with baselines, including where this recipe loses, are in stmm's "
        "`benchmarks/RESULTS.md`.",
        "",
        "## Citation",
        "",
        "If you use this pipeline, cite the data it was trained on and the methods it builds on:",
        "",
    ]
    data_refs = _data(str(metrics.get("section", "")), str(metrics.get("data", "")))
    lines += [f"- Data: {r}" for r in data_refs] or ["- Data: the section named above (cite its source)."]
    lines += [f"- Method: {r}" for r in _methods(spec)]
    lines += [
        "",
        "## Licence",
        "",
        f"Weights in this repository: `{meta['license']}`. Components loaded by name (for example pretrained "
        "image encoders pulled from the Hub) keep their own licences and access conditions; see "
        "`stmm info NAME` for the encoders in the stmm zoo.",
        "",
    ]
    return "\n".join(lines)


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card (empty dict when there is none)."""
    import yaml

    if not text.startswith("---"):
        return {}
    _, _, rest = text.partition("---")
    block, sep, _ = rest.partition("\n---")
    if not sep:
        return {}
    data = yaml.safe_load(block)
    return data if isinstance(data, dict) else {}


def _use_lines(spec: "PipelineSpec") -> list[str]:
    """The commands that use this pipeline, by the capabilities its family offers."""
    try:
        from stmm_core.family import get_family

        caps = set(get_family(spec.pipeline).capabilities)
    except Exception:  # noqa: BLE001 - a card is still written without the plug-in registry
        caps = {"embedding"}
    out = []
    if "embedding" in caps:
        out.append("stmm embed pipeline/ --data section.h5ad -o embedded.h5ad   # obsm['X_stmm'] = the embedding")
    if "expression" in caps:
        out.append("stmm predict pipeline/ --data section.h5ad -o predicted.h5ad  # X = predicted expression")
    if "scoring" in caps or "expression" in caps:
        out.append("stmm evaluate pipeline/ --data held_out.h5ad               # Pearson r, image->expression "
                   "retrieval")
    k = " -k 7" if "embedding" in caps and spec.components.get("task") is not None else ""
    out.append(f"stmm fit pipeline/ --data other.h5ad -o run2/{k}          # re-fit this spec on other data")
    return out
