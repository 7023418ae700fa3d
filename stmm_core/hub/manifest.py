"""The manifest of a saved pipeline: sha256 of every file, versions, where its inputs came from.

``manifest.json``::

    {"format": "stmm-pipeline-v1", "pipeline": "graph-fusion", "spec_hash": "…",
     "stmm_version": "0.1.0",
     "components": {"gene": {"kind": "gene_encoder", "name": "hvg", "package": "stmm", "version": "0.1.0"}, …},
     "plugins": {"stmm": "0.1.0"},
     "files": {"spec.json": {"sha256": "…", "size": 1234}, …},
     "sources": [{"role": "image weights", "repo": "timm/resnet50.a1_in1k", "commit": "…", "sha256": "…"}]}

Verification re-hashes every listed file; a missing file or a different hash is a :class:`HubIntegrityError`
that names the file.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stmm_core.errors import StmmError

if TYPE_CHECKING:  # pragma: no cover
    from stmm_core.spec import PipelineSpec

MANIFEST = "manifest.json"
FORMAT = "stmm-pipeline-v1"
#: Files that belong to a saved pipeline, in the order they are written.
PIPELINE_FILES = ("spec.json", "model.safetensors", "preprocess.json", "metrics.json", "loss.png", "domains.png",
                  "README.md")
#: Pickle-based checkpoint formats: never loaded, and not even downloaded without an explicit flag.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

_HUB_ID = re.compile(r"weights=hf-hub:([^@;]+)@([0-9a-f]{40}|unknown);sha256=([0-9a-f]{64}|None)")


class HubIntegrityError(StmmError):
    """A pipeline file is missing or its sha256 differs from the manifest."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def is_pickle(name: str) -> bool:
    return name.lower().endswith(PICKLE_SUFFIXES)


def component_provenance(spec: "PipelineSpec") -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """For each slot: kind, name, providing package and its version; plus {package: version}."""
    from stmm_core.plugins import get_registry
    from stmm_core.spec import family_slots

    reg = get_registry()
    versions = {s.package: s.version for s in reg.statuses if s.package}
    comps: dict[str, dict[str, str]] = {}
    plugins: dict[str, str] = {}
    for slot, ref in spec.components.items():
        if ref is None:
            continue
        kind = family_slots(spec.pipeline)[slot][0]
        info = reg.catalogue.get(kind, ref.name)
        package = info.package or "stmm"
        version = versions.get(package, "")
        comps[slot] = {"kind": kind, "name": ref.name, "package": package, "version": version}
        plugins[package] = version
    return comps, plugins


def family_provenance(name: str) -> dict[str, str]:
    """The pipeline family *name*, the package that provides it and that package's version."""
    from stmm_core.family import get_family
    from stmm_core.plugins import get_registry

    info = get_family(name)
    package = info.package or "stmm"
    versions = {s.package: s.version for s in get_registry().statuses if s.package}
    return {"name": name, "package": package, "version": versions.get(package, "")}


def sources_from_info(info: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Hub commits a fit used (the image encoder's weights), parsed from the fit info."""
    out: list[dict[str, Any]] = []
    ident = ((info or {}).get("image") or {}).get("encoder") or ""
    m = _HUB_ID.search(ident)
    if m:
        out.append({"role": "image encoder weights", "repo": m.group(1),
                    "commit": None if m.group(2) == "unknown" else m.group(2),
                    "sha256": None if m.group(3) == "None" else m.group(3)})
    return out


def build_manifest(folder: str | Path, spec: "PipelineSpec", files: list[str] | None = None,
                   sources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Hash the pipeline files present in *folder* (or exactly *files*) and describe the pipeline."""
    from stmm_core import __version__

    folder = Path(folder)
    if files is None:
        from stmm_core.family import get_family

        listed = tuple(get_family(spec.pipeline).run_files) or PIPELINE_FILES
        files = [f for f in dict.fromkeys(listed + ("README.md",)) if (folder / f).is_file()]
    names = files
    comps, plugins = component_provenance(spec)
    family = family_provenance(spec.pipeline)
    if family.get("package"):
        plugins[family["package"]] = family.get("version", "")
    return {
        "format": FORMAT,
        "pipeline": spec.pipeline,
        "recipe": spec.recipe,
        "spec_hash": spec.hash(),
        "stmm_version": __version__,
        "components": comps,
        "family": family,
        "plugins": plugins,
        "files": {n: {"sha256": sha256_file(folder / n), "size": (folder / n).stat().st_size} for n in names},
        "sources": list(sources or []),
    }


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    from stmm_core.atomic import write_text

    return write_text(Path(folder) / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def restore_hint(folder: str | Path, origin: str | None = None) -> str:
    """How to get a damaged saved pipeline back, by where it came from: a Hub download in the local cache (*origin*
    ``org/name@commit``), a copy made by ``stmm pull -o`` (it holds ``pulled.json``), or a run fitted here."""
    folder = Path(folder)
    if origin and origin != str(folder):
        return f"delete the cached copy under HF_HUB_CACHE and pull {origin} again"
    record = folder / "pulled.json"
    if record.is_file():
        try:
            pulled = json.loads(record.read_text())
            ref = f"{pulled['repo']}@{pulled['commit']}"
        except (OSError, ValueError, KeyError, TypeError):
            ref = "ORG/NAME@COMMIT"
        return f"it was pulled from the Hub: pull it again (stmm pull {ref} -o {folder} --overwrite)"
    return (f"it was fitted here, not pulled: re-run the 'stmm fit'/'stmm run' command that wrote it, with -o {folder} "
            "--overwrite (or a new -o folder)")


def read_manifest(folder: str | Path, origin: str | None = None) -> dict[str, Any]:
    """The manifest of *folder*, or a clear error when it is absent or unreadable (*origin*: the Hub repository
    it was downloaded from, for the advice)."""
    path = Path(folder) / MANIFEST
    if not path.is_file() and not (Path(folder) / "spec.json").is_file():
        raise HubIntegrityError(f"{folder} has no {MANIFEST} or spec.json: it is not a saved stmm pipeline; give a run "
                                "folder written by 'stmm fit'/'stmm run' (or 'stmm pull -o')")
    if not path.is_file():
        raise HubIntegrityError(
            f"{folder} has no {MANIFEST}: it is not a saved stmm pipeline (a run folder from 'stmm fit' or 'stmm run' "
            "is one; a run folder written by stmm 0.1.0 without one, e.g. of a magic pipeline, still works with "
            "'stmm predict'/'stmm evaluate': to push it, fit its spec.json again with this stmm (stmm fit "
            f"{folder}/spec.json --data … -o NEW), which writes the card and the manifest)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HubIntegrityError(f"{path} is not valid JSON ({exc}); {restore_hint(folder, origin)}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("files"), dict):
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise HubIntegrityError(f"{path}: unknown manifest format {found!r} (this stmm reads {FORMAT!r}); "
                                "upgrade stmm")
    for name in data["files"]:
        if not isinstance(name, str) or name.startswith(("/", "..")) or "/../" in name or "\\" in name:
            raise HubIntegrityError(f"{path} lists an unsafe file name {name!r}; refusing to use it")
    return data


def verify_files(folder: str | Path, manifest: dict[str, Any], origin: str | None = None) -> None:
    """Re-hash every file the manifest lists; raise on the first one missing or different (*origin*: the Hub
    repository the folder was downloaded from, named in the message and the advice)."""
    folder = Path(folder)
    where = origin or str(folder)
    for name, entry in sorted(manifest["files"].items()):
        path = folder / name
        if not path.is_file():
            raise HubIntegrityError(f"{where}: {name} is listed in {MANIFEST} but missing; "
                                    f"{restore_hint(folder, origin)}")
        actual = sha256_file(path)
        if actual != entry.get("sha256"):
            raise HubIntegrityError(
                f"{where}: {name} is corrupted or was modified (sha256 {actual[:12]}…, manifest says "
                f"{str(entry.get('sha256'))[:12]}…); {restore_hint(folder, origin)}"
            )
