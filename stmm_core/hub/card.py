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
    if spec.recipe:
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


def render_card(spec: "PipelineSpec", metrics: dict[str, Any] | None = None, *, repo_id: str | None = None,
                license: str | None = None, datasets: list[str] | None = None) -> str:
    """The whole README.md text."""
    import yaml

    meta = card_metadata(spec, metrics, license=license, datasets=datasets)
    metrics = metrics or {}
    name = repo_id or "ORG/NAME"
    title = f"stmm {spec.recipe or spec.pipeline} pipeline"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "", f"# {title}", ""]
    lines += [
        f"A trained [stmm](https://pypi.org/project/stmm/) **{spec.pipeline}** pipeline"
        + (f" (recipe `{spec.recipe}`)" if spec.recipe else "") + ". The spec names its components through the "
        "local stmm catalogue; the weights are safetensors; every file is listed with its sha256 in "
        "`manifest.json` and checked when the pipeline is pulled. Nothing in this repository is executed.",
        "",
        "## Components",
        "",
        "| slot | component | parameters |",
        "|---|---|---|",
    ]
    for slot, ref in spec.components.items():
        if ref is None:
            continue
        params = ", ".join(f"{k}={v}" for k, v in sorted(ref.params.items()) if v is not None)
        lines.append(f"| {slot} | `{ref.name}` | {params[:160] + ('…' if len(params) > 160 else '')} |")
    train = spec.train.model_dump(mode="json")
    lines += ["", "Training: " + ", ".join(f"{k}={v}" for k, v in sorted(train.items())) + ".", ""]
    lines += [
        "## How to use it",
        "",
        "```bash",
        "pip install stmm",
        f"stmm pull {name}@COMMIT -o pipeline/        # pin a commit; every file is sha256-checked",
        "stmm embed pipeline/ --data section.h5ad -o embedded.h5ad   # obsm['X_stmm'] = the embedding",
        "```",
        "",
        "Re-using it offline: `stmm pull ... --offline` (or `HF_HUB_OFFLINE=1`) reads only the local cache.",
        "",
    ]
    info = metrics.get("info") or {}
    if info or metrics.get("clustering"):
        lines += ["## Training data and results", ""]
        if metrics.get("section"):
            lines.append(f"- section: `{metrics['section']}` ({info.get('n_spots', '?')} spots, "
                         f"{info.get('n_genes', '?')} genes)")
        if (info.get("image") or {}).get("encoder"):
            lines.append(f"- image features: `{info['image']['encoder']}`")
        c = valid_scores(metrics)
        if c:
            lines.append(f"- domains: K={metrics.get('n_domains')}, ARI {c['ari']:.3f}, NMI {c['nmi']:.3f} against "
                         f"`obs[{c.get('label_column')!r}]` ({c.get('n_labelled', '?')} labelled spots)")
        if metrics.get("seed") is not None:
            lines.append(f"- seed {metrics['seed']}, stmm {metrics.get('stmm_version', '?')}, "
                         f"{metrics.get('wall_seconds', 0):.1f} s wall time")
        lines.append("")
    lines += [
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
