"""Save and load a pipeline folder (strict, verified, nothing executed).

:func:`save_pipeline` writes a complete folder from a fit result; :func:`finish_pipeline_dir` adds the model
card and the manifest to a folder that already holds the spec and weights (``stmm fit`` calls it on its run
folder, which is how a run folder becomes pushable); :func:`load_pipeline` verifies the manifest, parses the
spec against the local catalogue and reads the weights strictly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stmm_core.errors import ComponentNotFound, SpecError, StmmError
from stmm_core.hub.card import CARD, render_card
from stmm_core.hub.manifest import (MANIFEST, HubIntegrityError, build_manifest, is_pickle, read_manifest,
                                    restore_hint, sources_from_info, verify_files, write_manifest)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from stmm_core.spec import PipelineSpec

WEIGHTS = "model.safetensors"
WEIGHTS_FORMAT = "stmm-graph-fusion-v1"


def weight_prefixes(pipeline: str) -> tuple[str, ...]:
    """Allowed top-level key prefixes of ``model.safetensors``: the trained slots of the pipeline's family (one
    prefix per trained component, e.g. ``fusion.``, ``graph.``)."""
    from stmm_core.family import get_family

    fam = get_family(pipeline)
    return tuple(fam.trained_slots or fam.slots)


@dataclass
class LoadedPipeline:
    """A verified pipeline folder: spec, weights (CPU tensors) and fitted preprocessing state."""

    path: Path
    spec: "PipelineSpec"
    state_dict: dict[str, "torch.Tensor"]
    gene_state: dict[str, Any] | None
    manifest: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    def component_state(self, prefix: str) -> dict[str, "torch.Tensor"]:
        """The weights of one component, with its ``prefix.`` removed."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.state_dict.items() if k.startswith(p)}


def _write_json(path: Path, data: Any) -> None:
    from stmm_core.atomic import write_text

    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def save_pipeline(folder: str | Path, spec: "PipelineSpec", state_dict: dict[str, "torch.Tensor"], *,
                  gene_state: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                  sources: list[dict[str, Any]] | None = None, license: str | None = None,
                  datasets: list[str] | None = None, repo_id: str | None = None) -> Path:
    """Write spec, weights (prefixed keys, spec hash in the metadata), state, card and manifest to *folder*."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prefixes = weight_prefixes(spec.pipeline)
    bad = sorted(k for k in state_dict if prefixes and k.split(".", 1)[0] not in prefixes)
    if bad:
        raise StmmError(f"weights keys must be prefixed by component ({', '.join(prefixes)}): got {bad[:3]}")
    (folder / "spec.json").write_text(spec.pretty_json() + "\n")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"spec_hash": spec.hash(), "format": WEIGHTS_FORMAT})
    if gene_state is not None:
        _write_json(folder / "preprocess.json", gene_state)
    if metrics is not None:
        _write_json(folder / "metrics.json", metrics)
    finish_pipeline_dir(folder, spec, metrics, sources=sources, license=license, datasets=datasets,
                        repo_id=repo_id)
    return folder


def finish_pipeline_dir(folder: str | Path, spec: "PipelineSpec", metrics: dict[str, Any] | None = None, *,
                        sources: list[dict[str, Any]] | None = None, license: str | None = None,
                        datasets: list[str] | None = None, repo_id: str | None = None) -> dict[str, Any]:
    """Write README.md (model card) then manifest.json over the pipeline files present in *folder*."""
    folder = Path(folder)
    if sources is None:
        sources = sources_from_info((metrics or {}).get("info"))
    from stmm_core.atomic import write_text

    figures = [f for f in ("domains.png",) if (folder / f).is_file()]
    write_text(folder / CARD, render_card(spec, metrics, repo_id=repo_id, license=license, datasets=datasets,
                                          figures=figures))
    manifest = build_manifest(folder, spec, sources=sources)
    write_manifest(folder, manifest)
    return manifest


def recard(folder: str | Path, *, license: str | None = None, datasets: list[str] | None = None,
           repo_id: str | None = None) -> dict[str, Any]:
    """Re-render the card of a saved pipeline (licence, datasets, repo name) and refresh its manifest."""
    loaded = load_pipeline(folder)
    old = loaded.manifest
    return finish_pipeline_dir(folder, loaded.spec, loaded.metrics or None, sources=old.get("sources"),
                               license=license, datasets=datasets, repo_id=repo_id)


def check_components(manifest: dict[str, Any], raw_spec: dict[str, Any]) -> None:
    """Every component the spec names must be installed; otherwise say which package provides it."""
    from stmm_core.plugins import get_catalogue
    from stmm_core.spec import DEFAULT_PIPELINE, family_slots

    from stmm_core.plugins import get_registry

    name = str(raw_spec.get("pipeline", DEFAULT_PIPELINE))
    if name not in get_registry().families:
        prov = manifest.get("family") or {}
        pkg, ver = prov.get("package"), prov.get("version")
        where = (f"it is provided by the package '{pkg}'{' ' + ver if ver else ''}; install it "
                 f"(pip install '{pkg}{'==' + ver if ver else ''}') and retry" if pkg else
                 "its providing package is not recorded (saved by an older stmm)")
        raise ComponentNotFound(f"this pipeline is a '{name}' pipeline, a family that is not installed: {where}. "
                                "Nothing was installed or executed. Installed families: 'stmm list --kind pipeline'")
    catalogue = get_catalogue()
    slots = family_slots(name)
    provided = manifest.get("components") or {}
    for slot, ref in (raw_spec.get("components") or {}).items():
        if not isinstance(ref, dict) or slot not in slots:
            continue
        kind = slots[slot][0]
        try:
            catalogue.get(kind, str(ref.get("name")))
        except ComponentNotFound:
            prov = provided.get(slot) or {}
            pkg = prov.get("package")
            ver = f"=={prov['version']}" if prov.get("version") else ""
            where = (f"it is provided by the package '{pkg}'{(' ' + ver.lstrip('=')) if ver else ''}; install it "
                     f"(pip install '{pkg}{ver}') and retry" if pkg else "its providing package is not recorded")
            raise ComponentNotFound(
                f"this pipeline needs the {kind} '{ref.get('name')}' (slot '{slot}'), which is not installed: "
                f"{where}. Nothing was installed or executed."
            ) from None


def load_pipeline(folder: str | Path, *, allow_pickle: bool = False, origin: str | None = None) -> LoadedPipeline:
    """Verify and read a pipeline folder.

    Order of checks: manifest present and well-formed → no pickle files (unless *allow_pickle*; even then they
    are never loaded) → every listed file's sha256 → every component installed (else: which package provides
    it) → spec valid and its hash equal to the manifest's and the weights' metadata → weights readable, all keys
    prefixed by a trained component.
    """
    from stmm_core.spec import parse_spec

    folder = Path(folder)
    where = origin or str(folder)
    if not folder.is_dir():
        raise StmmError(f"{folder} is not a folder; give a saved pipeline folder or a Hub name (hf:org/name@rev)")
    manifest = read_manifest(folder, origin)
    pickles = sorted(n for n in manifest["files"] if is_pickle(n))
    pickles += sorted(p.name for p in folder.iterdir() if is_pickle(p.name) and p.name not in pickles)
    if pickles and not allow_pickle:
        raise StmmError(f"{where} contains pickle files ({', '.join(pickles)}), which can execute code when "
                        "loaded; stmm refuses them. Pass --allow-pickle to accept the folder anyway (stmm still "
                        "never unpickles them; it loads safetensors only)")
    verify_files(folder, manifest, origin=origin)
    if "spec.json" not in manifest["files"]:
        raise HubIntegrityError(f"{where}: the manifest must list spec.json")
    try:
        raw = json.loads((folder / "spec.json").read_text())
    except ValueError as exc:
        raise SpecError(f"{where}/spec.json is not valid JSON ({exc})") from None
    check_components(manifest, raw if isinstance(raw, dict) else {})
    spec = parse_spec(raw)
    from stmm_core.family import get_family

    lacking = [f for f in get_family(spec.pipeline).required_files if f not in manifest["files"]]
    if lacking:
        raise HubIntegrityError(f"{where}: the manifest must list {', '.join(lacking)} (a {spec.pipeline} pipeline)")
    if spec.hash() != manifest.get("spec_hash"):
        raise HubIntegrityError(f"{where}: spec.json hashes to {spec.hash()[:12]}… but the manifest records "
                                f"{str(manifest.get('spec_hash'))[:12]}… (the installed components' defaults may "
                                "differ from the ones it was trained with; install the plug-in versions in "
                                "manifest.json)")
    state: dict[str, Any] = {}
    if WEIGHTS in manifest["files"]:
        state = _read_weights(folder, spec, where)
    gene_state = None
    if (folder / "preprocess.json").is_file() and "preprocess.json" in manifest["files"]:
        gene_state = json.loads((folder / "preprocess.json").read_text())
    metrics: dict[str, Any] = {}
    if "metrics.json" in manifest["files"]:
        metrics = json.loads((folder / "metrics.json").read_text())
    return LoadedPipeline(folder, spec, state, gene_state, manifest, metrics)


def _read_weights(folder: Path, spec: "PipelineSpec", where: str) -> dict[str, Any]:
    """``model.safetensors``: trained for this spec (hash in its metadata), keys prefixed by the family's slots."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(folder / WEIGHTS), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise HubIntegrityError(f"{where}/{WEIGHTS} cannot be read as safetensors ({exc}); "
                                f"{restore_hint(folder, None if where == str(folder) else where)}") from None
    if meta.get("spec_hash") != spec.hash():
        raise HubIntegrityError(f"{where}/{WEIGHTS} was trained for spec {str(meta.get('spec_hash'))[:12]}…, not "
                                f"for this spec.json ({spec.hash()[:12]}…)")
    prefixes = weight_prefixes(spec.pipeline)
    stray = sorted(k for k in state if prefixes and k.split(".", 1)[0] not in prefixes)
    if stray:
        raise HubIntegrityError(f"{where}/{WEIGHTS} has keys outside the components {prefixes}: {stray[:3]}")
    return state


__all__ = ["LoadedPipeline", "save_pipeline", "finish_pipeline_dir", "load_pipeline", "recard", "MANIFEST",
           "WEIGHTS"]
