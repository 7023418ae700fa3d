"""A Magic run folder: the spec, the run metadata and the stage weights as safetensors.

Layout::

    DIR/spec.json            the validated pipeline spec (its hash is stored in every weights file)
    DIR/magic.json           genes (input vocabulary, targets, evaluation HVGs), tile geometry, sections,
                             initialisation of the image encoder, per-epoch histories, timings
    DIR/stage1.safetensors   stage-1 weights (encoders, heads, temperature, fusion, ITM head; no EMA copies)
    DIR/stage2.safetensors   stage-2 weights (image encoder + decoder)

Loading never executes code from the folder: the spec names components in the local catalogue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from stmm_core.errors import SpecError, StmmError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.spec import PipelineSpec
    from stmm_magic.model import MagicStage1, MagicStage2

SPEC_FILE, META_FILE = "spec.json", "magic.json"
STAGE_FILES = {1: "stage1.safetensors", 2: "stage2.safetensors"}
FORMAT = "stmm-magic-v1"


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write (temp file + rename)."""
    from stmm_core.pipeline.outputs import write_json as _write

    _write(path, data)


STAGE1_SLOTS = ("image", "gene", "contrastive", "fusion", "matching")


def stage1_parts(spec: "PipelineSpec") -> dict[str, Any]:
    """What determines stage 1: its components, tiles, seed, stage-1 training and the gene choice."""
    d = spec.to_dict()
    train = d["train"]
    return {"components": {k: d["components"].get(k) for k in STAGE1_SLOTS}, "tiles": d["tiles"],
            "seed": train["seed"], "stage1": train["stage1"], "augment": train["augment"],
            "val_fraction": train["val_fraction"],
            "genes": {k: d["components"]["decoder"]["params"].get(k)
                      for k in ("n_targets", "target_rule", "targets", "target_sum", "n_eval_hvg")}}


def stage_hash(spec: "PipelineSpec", stage: int) -> str:
    """sha256 of what determines a stage: :func:`stage1_parts` for stage 1 (a stage-2 change keeps stage 1
    valid), plus the decoder and the stage-2 training for stage 2. Spec fields unrelated to Magic (added for
    other pipelines) never invalidate a run folder."""
    import hashlib

    parts: dict[str, Any] = {"stage1": stage1_parts(spec)}
    if stage == 2:
        d = spec.to_dict()
        parts.update(decoder=d["components"].get("decoder"), stage2=d["train"]["stage2"])
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def save_stage(out_dir: Path, stage: int, state: dict[str, torch.Tensor], spec: "PipelineSpec") -> Path:
    """Write ``stage{1,2}.safetensors`` atomically with the stage's spec hash in its metadata."""
    from safetensors.torch import save_file

    from stmm_core.atomic import atomic_file

    path = Path(out_dir) / STAGE_FILES[stage]
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "stage": str(stage),
                                               "spec_hash": stage_hash(spec, stage)})
    return path


def load_stage(run_dir: Path, stage: int, spec: "PipelineSpec") -> dict[str, torch.Tensor]:
    """Read a stage's weights; the file must belong to this spec."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(run_dir) / STAGE_FILES[stage]
    if not path.is_file():
        hint = f"train it with 'stmm run magic … -o {run_dir} --stage {stage}'" if stage == 2 else \
            f"train it with 'stmm run magic … -o {run_dir}'"
        raise StmmError(f"{run_dir} has no stage-{stage} weights ({path.name}); {hint}")
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != FORMAT:
        raise StmmError(f"{path} is not a stmm Magic weights file (format {meta.get('format')!r})")
    if meta.get("spec_hash") != stage_hash(spec, stage):
        raise StmmError(f"{path} was trained with a different spec (stage-{stage} settings differ from "
                        f"{run_dir / SPEC_FILE}); re-run training into a fresh folder")
    return load_file(str(path))


@dataclass
class MagicRun:
    """A loaded run: spec, metadata and the models available in the folder (eval mode, CPU)."""

    path: Path
    spec: "PipelineSpec"
    meta: dict[str, Any]
    stage1: "MagicStage1 | None" = None
    stage2: "MagicStage2 | None" = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def targets(self) -> list[str]:
        return list(self.meta["genes"]["targets"])

    @property
    def eval_hvg(self) -> list[str]:
        return list(self.meta["genes"]["eval_hvg"])


def read_run_spec(run_dir: str | Path) -> tuple["PipelineSpec", dict[str, Any]]:
    """Spec and metadata of a run folder, with clear errors for anything else."""
    from stmm_core.spec import load_spec

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise StmmError(f"run folder not found: {run_dir}")
    if not (run_dir / SPEC_FILE).is_file():
        raise StmmError(f"{run_dir} is not a stmm run folder (no {SPEC_FILE})")
    spec = load_spec(run_dir / SPEC_FILE)
    if spec.pipeline != "magic":
        raise StmmError(f"{run_dir} holds a {spec.pipeline} run, not a magic run (an image → expression model); "
                        "give a folder written by 'stmm run magic'")
    meta_path = run_dir / META_FILE
    if not meta_path.is_file():
        raise StmmError(f"{run_dir} has no {META_FILE}: the run did not finish; train it again")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise StmmError(f"cannot read {meta_path}: {exc}") from None
    return spec, meta


def load_run(run_dir: str | Path, stages: tuple[int, ...] = (1, 2), device: str = "cpu") -> MagicRun:
    """Rebuild the models of a run folder from its spec and load their weights (strictly).

    The image encoder is built with random initialisation before the saved weights replace it, so loading
    never needs the network even when training started from pretrained weights.
    """
    from stmm_magic.pipeline import build_stage1, build_stage2

    run_dir = Path(run_dir)
    spec, meta = read_run_spec(run_dir)
    run = MagicRun(path=run_dir, spec=spec, meta=meta)
    genes = meta["genes"]
    build_spec = offline_spec(spec)
    if 1 in stages:
        state = load_stage(run_dir, 1, spec)
        model = build_stage1(build_spec, genes["input"])
        _load_strict(model, state, model.saved_state().keys(), "stage 1")
        run.stage1 = model.to(device).eval()
    if 2 in stages:
        state = load_stage(run_dir, 2, spec)
        model2 = build_stage2(build_spec, genes["targets"], None)
        _load_strict(model2, state, model2.saved_state().keys(), "stage 2")
        run.stage2 = model2.to(device).eval()
    return run


def offline_spec(spec: "PipelineSpec") -> "PipelineSpec":
    """The spec with the image encoder set to random initialisation (its weights come from the run)."""
    ref = spec.components.get("image")
    if ref is not None and "weights" in ref.params and ref.params["weights"] != "random":
        try:
            return spec.with_overrides({"image.weights": "random", "image.sha256": None})
        except SpecError:
            return spec.with_overrides({"image.weights": "random"})
    return spec


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], expected: Any, what: str) -> None:
    expected = set(expected)
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise StmmError(f"{what} weights do not fit the spec's model: {len(missing)} missing (e.g. {missing[:2]}), "
                        f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}); was the folder written by another "
                        "version of the components?")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise StmmError(f"{what} weights do not fit the spec's model ({' '.join(first[:2])[:300]})") from None


def finish_run(out_dir: str | Path, spec: "PipelineSpec", meta: dict[str, Any]) -> dict[str, Any]:
    """Make a trained run folder a saved pipeline: ``metrics.json`` (no local paths), the model card and
    ``manifest.json`` (sha256 of every file), as for every family; ``stmm push`` uploads it as is."""
    from stmm_core.hub.pipeline_dir import finish_pipeline_dir
    from stmm_core.hub.scrub import scrub_paths

    g = meta.get("genes") or {}
    sections = meta.get("sections_stage2") or meta.get("sections_stage1") or []
    metrics = scrub_paths({
        "stmm_version": meta.get("stmm_version"), "pipeline": spec.pipeline, "spec_hash": spec.hash(),
        "seed": meta.get("seed"), "device": meta.get("device"), "threads": meta.get("threads"),
        "section": ", ".join(str(s.get("name")) for s in sections),
        "sections": [{"name": s.get("name"), "n_spots": s.get("n_spots")} for s in sections],
        "genes": {"n_input": len(g.get("input") or []), "n_targets": len(g.get("targets") or []),
                  "n_eval_hvg": len(g.get("eval_hvg") or [])},
        "stages": [s for s in (1, 2) if (Path(out_dir) / STAGE_FILES[s]).is_file()],
        "image_init": meta.get("image_init"), "timings": meta.get("timings"),
    })
    write_json(Path(out_dir) / "metrics.json", metrics)
    finish_pipeline_dir(out_dir, spec, metrics, sources=[])
    return metrics
