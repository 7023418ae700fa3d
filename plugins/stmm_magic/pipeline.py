"""The two-stage Magic pipeline: read sections, choose genes, cut tiles, train stage 1 and/or stage 2, save.

Stage 1 trains the image and gene encoders (contrastive loss with momentum distillation, plus image–gene
matching through the fusion module). Stage 2 builds a fresh stage-2 model, loads the sub-modules named in
``train.stage2.load`` from the stage-1 weights, freezes those named in ``train.stage2.freeze`` and trains the
expression decoder on log1p-normalised targets.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from stmm_core.errors import DataError, SpecError, StmmError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.data.section import Section
    from stmm_core.spec import PipelineSpec
    from stmm_magic.model import MagicStage1, MagicStage2

Log = Callable[[str], None]


def build_component(spec: "PipelineSpec", slot: str) -> Any:
    """Instantiate the component in *slot* (None when the slot is empty)."""
    from stmm_core.pipeline_base import build_component as build

    return build(spec, slot)


def _check_capabilities(image: Any, gene: Any) -> None:
    if not (hasattr(image, "token_dim") and callable(getattr(image, "prepare", None))):
        raise SpecError(f"the magic pipeline's image slot needs a token image encoder returning pooled features and "
                        f"patch tokens (e.g. magic-vit), not {type(image).__name__}")
    if not (hasattr(gene, "token_dim") and callable(getattr(gene, "tokenize", None))):
        raise SpecError(f"the magic pipeline's gene slot needs a token gene encoder (e.g. performer), "
                        f"not {type(gene).__name__}")


def build_stage1(spec: "PipelineSpec", vocab: Sequence[str]) -> "MagicStage1":
    """Stage-1 model with the gene vocabulary *vocab*; components built in slot order (seed first!)."""
    from stmm_magic.model import MagicStage1

    image = build_component(spec, "image")
    gene = build_component(spec, "gene")
    _check_capabilities(image, gene)
    gene.setup(vocab)
    model = MagicStage1(image, gene, build_component(spec, "contrastive"), build_component(spec, "fusion"),
                        build_component(spec, "matching"))
    model.freeze_modules(spec.train.stage1.freeze)
    return model


def build_stage2(spec: "PipelineSpec", targets: Sequence[str], gene_mean: np.ndarray | None) -> "MagicStage2":
    """Stage-2 model (image encoder + decoder set up for *targets*)."""
    from stmm_magic.model import MagicStage2

    image = build_component(spec, "image")
    decoder = build_component(spec, "decoder")
    if not hasattr(image, "token_dim"):
        raise SpecError("the magic pipeline's image slot needs a token image encoder (e.g. magic-vit)")
    decoder.setup(image.token_dim, targets, gene_mean)
    return MagicStage2(image, decoder)


def image_input_px(spec: "PipelineSpec") -> int:
    """Tile output side in px = the image encoder's input size."""
    params = spec.components["image"].params
    for key in ("img_size", "input_size"):
        if isinstance(params.get(key), int):
            return int(params[key])
    return 224


def drop_empty_spots(section: "Section", min_counts: float = 1) -> "Section":
    """Remove spots with fewer than *min_counts* counts; genes are kept even when all zero (a measured gene
    that is never detected is a constant target, not a missing one)."""
    from dataclasses import replace

    totals = np.asarray(section.counts.sum(axis=1)).ravel()
    keep = totals >= min_counts
    if keep.all():
        return section
    if not keep.any():
        raise DataError(f"section {section.name!r}: every spot has fewer than {min_counts:g} counts; "
                        "check that the matrix holds raw counts")
    ks = np.flatnonzero(keep)
    meta = dict(section.meta)
    meta["filtered"] = {"spots_removed": int((~keep).sum()), "min_counts": min_counts}
    return replace(section, obs_names=section.obs_names[ks], counts=section.counts[ks],
                   coords=np.asarray(section.coords)[ks],
                   obs=section.obs.iloc[ks].copy() if section.obs is not None else None,
                   adata=section.adata[ks].copy() if section.adata is not None else None, meta=meta)


def read_sections(paths: Sequence[str | Path]) -> list["Section"]:
    """Read and validate each section (one :class:`DataError` per problem), drop empty spots; names unique."""
    from stmm_core.data.readers import read_section

    if not paths:
        raise DataError("no --data given; pass one or more sections")
    sections = [drop_empty_spots(read_section(p)) for p in paths]
    seen: dict[str, int] = {}
    for s in sections:
        if s.name in seen:
            seen[s.name] += 1
            s.name = f"{s.name}#{seen[s.name]}"
        else:
            seen[s.name] = 0
    return sections


def choose_genes(spec: "PipelineSpec", sections: Sequence["Section"], gene_encoder: Any) -> dict[str, list[str]]:
    """Input vocabulary, decoder targets and the evaluation HVGs, all from the training sections."""
    from stmm_magic.genes import rank_genes, select_genes, shared_genes

    dec = spec.components["decoder"].params
    shared = shared_genes(sections, min_shared=1)
    gene_encoder.fit_sections(sections)
    targets = select_genes(sections, int(dec["n_targets"]), dec["target_rule"], dec.get("targets"),
                           float(dec["target_sum"]), "target genes", setting="decoder.n_targets")
    hvg = rank_genes(sections, targets, "hvg", float(dec["target_sum"]))[: int(dec["n_eval_hvg"])]
    return {"input": list(gene_encoder.vocab), "targets": targets, "eval_hvg": hvg, "n_shared": len(shared)}


def _section_arrays(spec: "PipelineSpec", sections: Sequence["Section"], genes: dict[str, Any],
                    gene_encoder: Any | None, cache: Any, log: Log) -> tuple[list[Any], dict[str, Any]]:
    from stmm_magic.data import SectionArrays, section_tiles, tile_size_fullres
    from stmm_magic.genes import log1p_expression

    out_px = image_input_px(spec)
    dec = spec.components["decoder"].params
    arrays, tile_info = [], {}
    for s in sections:
        size = tile_size_fullres(s, spec.tiles.size, spec.tiles.size_factor)
        t0 = time.perf_counter()
        tiles = section_tiles(s, size, out_px, spec.tiles.pad_value, cache)
        log(f"{s.name}: {s.n_spots} spots, tiles {size:.0f} full-res px → {out_px} px "
            f"({time.perf_counter() - t0:.1f} s)")
        arrays.append(SectionArrays(
            name=s.name, obs_names=np.asarray(s.obs_names, dtype=object), coords=np.asarray(s.coords),
            tiles=tiles, tokens=gene_encoder.tokenize(s) if gene_encoder is not None else None,
            targets=log1p_expression(s, genes["targets"], float(dec["target_sum"])),
        ))
        tile_info[s.name] = size
    sizes = sorted(set(round(v, 3) for v in tile_info.values()))
    return arrays, {"fullres_px": float(np.median(list(tile_info.values()))), "per_section_fullres_px": tile_info,
                    "out_px": out_px, "pad_value": spec.tiles.pad_value, "distinct_sizes": sizes}


def fit_magic(
    spec: "PipelineSpec",
    data: Sequence[str | Path],
    out_dir: str | Path,
    *,
    stage: int | None = None,
    device: str = "auto",
    use_cache: bool = True,
    log: Log | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train stage 1 and/or stage 2 of *spec* on the sections *data*; write the run folder *out_dir*.

    ``stage=None`` trains both; ``stage=1`` only the contrastive stage; ``stage=2`` only the decoder, loading
    stage 1 from *out_dir* (which must hold a stage-1 run of the same stage-1 spec). Returns the metadata dict
    also written to ``magic.json``.

    Under torchrun (``stmm run magic --nproc N``) stage 1 is trained data-parallel by all processes (see
    :func:`stmm_magic.train.train_stage1`); process 0 alone writes the run folder and trains stage 2 (a small
    decoder over frozen image tokens); the other processes return ``{"rank": r}`` after stage 1.
    """
    from stmm_core import __version__
    from stmm_core.data.cache import FeatureCache
    from stmm_core.distributed import context as dist_ctx
    from stmm_core.seeding import configure_threads, resolve_device, seed_everything
    from stmm_magic.data import train_val_split
    from stmm_magic.model import freeze, load_prefixed
    from stmm_magic.run_io import (META_FILE, SPEC_FILE, STAGE_FILES, load_stage, read_run_spec, save_stage,
                                   stage1_parts, write_json)
    from stmm_magic.train import train_stage1, train_stage2

    log = log or (lambda msg: None)
    if spec.pipeline != "magic":
        raise SpecError(f"fit_magic needs a magic pipeline spec, got {spec.pipeline!r}")
    if stage not in (None, 1, 2):
        raise StmmError(f"--stage must be 1 or 2, got {stage}")
    from stmm_core.pipeline.outputs import check_output_dir

    out_dir = check_output_dir(out_dir, overwrite=overwrite, resume=stage == 2, inputs=list(data))
    dev = resolve_device(device)
    threads = configure_threads()  # STMM_THREADS (1 is fastest on an oversubscribed machine)
    distributed = dist_ctx.init(dev)  # under torchrun: join the process group (gloo on CPU, NCCL on GPU)
    rank = dist_ctx.rank() if distributed else 0
    if rank != 0:
        log = lambda msg: None  # noqa: E731 - process 0 reports
        if stage == 2:  # stage 2 is trained by process 0 alone
            dist_ctx.finish()
            return {"rank": rank}
    elif distributed and stage == 2:
        dist_ctx.finish()
        distributed = False
    t_start = time.perf_counter()
    cfg = spec.train
    seed = int(cfg.seed)

    prev_meta: dict[str, Any] | None = None
    if stage == 2:
        if not (Path(out_dir) / SPEC_FILE).is_file():
            raise StmmError(f"--stage 2 continues a run folder that holds stage 1, and {out_dir} has none: train "
                            f"stage 1 first ('stmm run magic … -o {out_dir} --stage 1'), or leave out --stage to "
                            "train both stages")
        old_spec, prev_meta = read_run_spec(out_dir)
        if stage1_parts(old_spec) != stage1_parts(spec):
            raise StmmError(f"{out_dir} holds a stage 1 trained with a different spec (components, tiles, seed or "
                            "gene choice differ); run both stages, or use the same --set options as for stage 1")
        load_stage(out_dir, 1, spec)  # exists and belongs to these stage-1 settings

    t0 = time.perf_counter()
    sections = read_sections(data)
    read_s = time.perf_counter() - t0
    cache = FeatureCache() if use_cache else None

    seed_everything(seed)
    model1 = None
    if prev_meta is None:
        from stmm_magic.genes import shared_genes

        shared_genes(sections, min_shared=2)
        gene_probe = build_component(spec, "gene")
        if not callable(getattr(gene_probe, "fit_sections", None)):
            raise SpecError(f"the magic pipeline's gene slot needs a token gene encoder (e.g. performer), "
                            f"not {type(gene_probe).__name__}")
        genes = choose_genes(spec, sections, gene_probe)
        seed_everything(seed)
        model1 = build_stage1(spec, genes["input"])
        gene_encoder = model1.gene
    else:
        genes = dict(prev_meta["genes"])
        seed_everything(seed)
        model1 = build_stage1(offline_spec_if_needed(spec), genes["input"])
        gene_encoder = model1.gene
    log(f"{len(sections)} section(s), {genes['n_shared']} shared genes; {len(genes['input'])} input gene tokens, "
        f"{len(genes['targets'])} targets, {len(genes['eval_hvg'])} evaluation HVGs")

    t0 = time.perf_counter()
    arrays, tile_info = _section_arrays(spec, sections, genes, gene_encoder, cache, log)
    tiles_s = time.perf_counter() - t0
    tiles = torch.from_numpy(np.concatenate([a.tiles for a in arrays]))
    tokens = torch.from_numpy(np.concatenate([a.tokens for a in arrays]))
    targets = torch.from_numpy(np.concatenate([a.targets for a in arrays]))
    train_idx, val_idx = train_val_split([a.n for a in arrays], cfg.val_fraction, seed)

    if rank == 0:
        if stage != 2 and out_dir.is_dir() and any(out_dir.iterdir()):  # --overwrite: the earlier run goes whole
            from stmm_core.atomic import discard

            discard(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = dict(prev_meta or {})
    meta.update({
        "format": "stmm-magic-v1", "stmm_version": __version__, "spec_hash": spec.hash(),
        "genes": genes, "tiles": tile_info, "device": dev, "threads": threads, "seed": seed,
        "image_model": spec.components["image"].params.get("model") or spec.components["image"].name,
    })
    if prev_meta is None:
        from stmm_magic.model import params_digest

        bank = fit_image_inputs(model1.image, tiles, model1.momentum_image)
        if bank is not None:
            meta["image_bank"] = bank
        meta["image_init"] = dict(getattr(model1.image, "weights_info", {}) or {})
        meta["image_init"]["params_sha256"] = params_digest(model1.image)
    timings: dict[str, float] = dict(meta.get("timings", {}))
    timings.update(read_seconds=read_s, tiles_seconds=tiles_s)
    if rank == 0:
        from stmm_core.atomic import write_text

        write_text(out_dir / SPEC_FILE, spec.pretty_json() + "\n")

    # ---- stage 1
    if stage in (None, 1):
        meta["sections_stage1"] = _section_records(arrays, data, sections)
        meta["split"] = {"n_train": int(len(train_idx)), "n_val": int(len(val_idx))}
        model1 = model1.to(dev)
        t0 = time.perf_counter()
        from stmm_magic.pretrain import maybe_pretrain  # gene.pretrain_epochs > 0: masked-expression pre-training

        pre = maybe_pretrain(model1, log, seed, dev)
        if pre is not None:
            meta["gene_pretraining"] = pre
            timings["gene_pretraining_seconds"] = time.perf_counter() - t0
            t0 = time.perf_counter()
        hist1 = train_stage1(model1, tiles, tokens, train_idx, val_idx, cfg.stage1, cfg.augment, seed, log=log,
                             device=dev)
        timings["stage1_seconds"] = time.perf_counter() - t0
        meta["history_stage1"] = hist1
        if distributed:
            meta["stage1_processes"] = dist_ctx.world_size()
            dist_ctx.finish()
            if rank != 0:
                return {"rank": rank}
        model1 = model1.to("cpu")
        (out_dir / STAGE_FILES[2]).unlink(missing_ok=True)  # a previous stage 2 belongs to another stage 1
        save_stage(out_dir, 1, model1.saved_state(), spec)
        stage1_state = model1.saved_state()
        meta["timings"] = {**timings, "wall_seconds": time.perf_counter() - t_start}
        write_json(out_dir / META_FILE, meta)  # a finished stage 1 is usable even if stage 2 fails
    else:
        stage1_state = load_stage(out_dir, 1, spec)

    # ---- stage 2
    if stage in (None, 2):
        meta["sections_stage2"] = _section_records(arrays, data, sections)
        seed_everything(seed)  # a stage-2 encoder that is not loaded starts from stage 1's initialisation
        gene_mean = targets[torch.as_tensor(train_idx)].mean(0).numpy()
        model2 = build_stage2(offline_spec_if_needed(spec) if "image" in cfg.stage2.load else spec,
                              genes["targets"], gene_mean)
        if "image" in cfg.stage2.load:
            load_prefixed(model2.image, stage1_state, "image.")
        else:
            fit_image_inputs(model2.image, tiles)
        if "image" in cfg.stage2.freeze:
            freeze([model2.image])
        meta["stage2_image"] = {"loaded_from_stage1": "image" in cfg.stage2.load,
                                "frozen": "image" in cfg.stage2.freeze}
        if spec.components["decoder"].params.get("ensemble"):
            from stmm_magic.readout import fit_readouts

            if stage == 2:  # the stage-1 model was built, not trained, in this invocation
                model1.load_state_dict(stage1_state, strict=False)
            groups = np.repeat(np.arange(len(arrays)), [a.n for a in arrays])
            meta["readout_ensemble"] = fit_readouts(model2, model1.to("cpu"), tiles, tokens, targets, train_idx,
                                                    groups)
        model2 = model2.to(dev)
        t0 = time.perf_counter()
        hist2 = train_stage2(model2, tiles, targets, train_idx, val_idx, cfg.stage2, cfg.augment, seed, log=log,
                             device=dev)
        timings["stage2_seconds"] = time.perf_counter() - t0
        meta["history_stage2"] = hist2
        save_stage(out_dir, 2, model2.to("cpu").saved_state(), spec)
    timings["wall_seconds"] = time.perf_counter() - t_start  # of this invocation
    meta["timings"] = timings
    write_json(out_dir / META_FILE, meta)
    _plot_histories(out_dir, meta)
    return meta


def fit_image_inputs(image: Any, tiles: torch.Tensor, *copies: Any) -> dict[str, Any] | None:
    """Fit an image encoder's input statistics on the training *tiles* when it has any (``fit_inputs``: the
    feature bank's z-score; a ViT has none) and copy them into *copies* (momentum encoders). None: nothing fitted."""
    fit = getattr(image, "fit_inputs", None)
    if not callable(fit):
        return None
    info = fit(tiles)
    for c in copies:
        for (name, b_c), (_, b) in zip(c.named_buffers(), image.named_buffers()):
            b_c.copy_(b)
    return info


def _section_records(arrays: Any, data: Sequence[str | Path], sections: Any) -> list[dict[str, Any]]:
    """What a run was trained on (``evaluate`` recognises these sections by their fingerprint)."""
    from stmm_core.data.sanity import section_fingerprint
    from stmm_core.hub.scrub import scrub_paths

    # the run folder may be pushed: no local paths (evaluate recognises training sections by fingerprint)
    return [{"name": a.name, "n_spots": a.n, "path": scrub_paths(str(p)), "fingerprint": section_fingerprint(sec)}
            for a, p, sec in zip(arrays, data, sections)]


def offline_spec_if_needed(spec: "PipelineSpec") -> "PipelineSpec":
    """When weights will be loaded from stage 1 anyway, build the encoder without downloading anything."""
    from stmm_magic.run_io import offline_spec

    return offline_spec(spec)


def _plot_histories(out_dir: Path, meta: dict[str, Any]) -> None:
    from stmm_core.plots import plot_loss

    for key, name in (("history_stage1", "loss_stage1.png"), ("history_stage2", "loss_stage2.png")):
        hist = meta.get(key) or []
        if hist:
            keep = [{k: v for k, v in h.items() if k in ("epoch", "loss", "loss_itc", "loss_itm", "val_mse")}
                    for h in hist]
            plot_loss(keep, out_dir / name)
