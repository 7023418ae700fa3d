"""Registered benchmark datasets: descriptors validated by pydantic, resolved to a checked local file.

A descriptor names one section: a path relative to the data folder (``$STMM_DATA``, default
``../shared/data`` beside the project) and/or a download address, with the file's sha256. A user's own
``.h5ad`` (or Space Ranger folder) is accepted by path and described on the fly (no checksum).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stmm_core.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


class DatasetDescriptor(BaseModel):
    """One section a suite can run on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
    description: str = ""
    path: Optional[str] = Field(None, description="file relative to the data folder, or absolute")
    url: Optional[str] = Field(None, description="download address (http(s):// or file://)")
    sha256: Optional[str] = Field(None, description="hex digest of the file; checked before use")
    label: Optional[str] = Field(None, description="obs column with ground-truth domains (domains suite)")
    group: Optional[str] = Field(None, description="sections of one group are folds of one another")
    citation: str = ""

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v.lower())):
            raise ValueError("sha256 must be 64 hex digits")
        return None if v is None else v.lower()

    @model_validator(mode="after")
    def _where(self) -> "DatasetDescriptor":
        if self.path is None and self.url is None:
            raise ValueError(f"dataset {self.name!r} needs a path or a url")
        if self.url is not None and self.sha256 is None:
            raise ValueError(f"dataset {self.name!r}: a download address needs its sha256")
        return self


_DLPFC_CITE = "Maynard et al., Nat Neurosci 2021 (spatialLIBD)"
_HER2ST_CITE = "Andersson et al., Nat Commun 2021"
_HER2ST_SHA = {
    "C2": "227ff4141f8bf94308f51983cfb5461e847544a95847d31e7044bdd1648d11ad",
    "C3": "c44249303614d3642682c1ae08946c93efc59d7bc2d5573677c8b268620bb74c",
    "C4": "6fc13d55ac2c13b2b8757ef531a6bd6e40b034a588a35f90801c83e395d901a8",
    "C5": "87072eeacf828c5c84a4cf434df5751f31f4e7f4d004974b9ab94b0517abec6f",
    "C6": "13a8ffd64d2719a3a4d9f9b7b60a1875b2e9f68074e02ae25a497819f1b97715",
}

BUILTIN: dict[str, DatasetDescriptor] = {
    d.name: d
    for d in [
        DatasetDescriptor(
            name="dlpfc-151676", path="dlpfc/151676/dlpfc_151676_5000genes_lowres.h5ad", label="layer",
            sha256="b56c6c6aa188e9a368fd4785a4b50fa1f03a64ed32e432626bd9322b4f731e00", group="dlpfc",
            description="DLPFC 151676, 10x Visium, 3,460 spots, 5,000 genes, expert layers L1-L6/WM, lowres H&E",
            citation=_DLPFC_CITE),
        DatasetDescriptor(
            name="dlpfc-151675", path="dlpfc/151675/dlpfc_151675_5000genes_lowres.h5ad", label="layer",
            sha256="db4fca94d44691b8c97959c2a09448dbf845555b148d9cff38f7250ecc4a00e1", group="dlpfc",
            description="DLPFC 151675 (adjacent to 151676, same donor), 10x Visium, 3,592 spots, 5,000 genes, "
                        "expert layers L1-L6/WM, lowres H&E",
            citation=_DLPFC_CITE),
        DatasetDescriptor(
            name="her2st-A1", path="her2st/h5ad/her2st_A1.h5ad", label="label",
            sha256="d746193d427c37a780e292495ecf49dec91aeeb710fa8f763df76fdbff677a95", group="her2st-A",
            description="HER2ST section A1 (patient A), legacy ST 100 um spots, 346 spots, 2000-px H&E rendering, "
                        "pathologist labels",
            citation=_HER2ST_CITE),
        DatasetDescriptor(
            name="dlpfc-151510", path="dlpfc/151510_drsc_500genes/dlpfc_151510_500genes_lowres.h5ad",
            label="annotation", sha256="f2adbbbe1e355550c58846a4c263ef4ba766422eca2c39cf1eca8d17ac2cd82f",
            group="dlpfc",
            description="DLPFC 151510, 10x Visium, 4,634 spots, 500 genes, layers Layer1-6/WM, lowres H&E",
            citation=_DLPFC_CITE),
        *[DatasetDescriptor(
            name=f"her2st-{s}", path=f"her2st/h5ad/her2st_{s}.h5ad", sha256=sha, group="her2st-C",
            description=f"HER2ST section {s} (patient C), legacy ST 100 um spots, full-resolution H&E "
                        "(the checksum covers the .h5ad; the JPEG it points to is read beside it)",
            citation=_HER2ST_CITE)
          for s, sha in _HER2ST_SHA.items()],
    ]
}


def data_root() -> Path:
    """``$STMM_DATA`` if set, else ``../shared/data`` beside the project."""
    env = os.environ.get("STMM_DATA")
    return Path(env).expanduser().resolve() if env else (ROOT.parent / "shared" / "data").resolve()


def download_root() -> Path:
    """Where downloaded datasets are kept: ``$STMM_CACHE_DIR/datasets`` (default ``~/.cache/stmm/datasets``)."""
    from stmm_core.data.cache import default_cache_root

    return default_cache_root() / "datasets"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class ResolvedDataset(BaseModel):
    """A descriptor with the local file it resolved to (checksum verified when one is registered)."""

    model_config = ConfigDict(frozen=True)

    descriptor: DatasetDescriptor
    local_path: str
    verified: bool

    @property
    def name(self) -> str:
        return self.descriptor.name


def _download(desc: DatasetDescriptor, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    os.close(fd)
    try:
        with urllib.request.urlopen(desc.url, timeout=60) as resp, open(tmp, "wb") as out:  # noqa: S310
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"dataset {desc.name!r}: could not download {desc.url} ({exc}); download it by hand "
                        f"to {dest} or set STMM_DATA to a folder holding {desc.path or dest.name}") from None
    got = sha256_file(Path(tmp))
    if got != desc.sha256:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"dataset {desc.name!r}: the download from {desc.url} has sha256 {got[:16]}…, expected "
                        f"{desc.sha256[:16]}…; the file at the address changed or the transfer was corrupted")
    os.replace(tmp, dest)


def resolve(desc: DatasetDescriptor) -> ResolvedDataset:
    """The local file of *desc*: found under the data folder, or downloaded; sha256 checked."""
    candidates: list[Path] = []
    if desc.path is not None:
        p = Path(desc.path).expanduser()
        candidates.append(p if p.is_absolute() else data_root() / p)
    if desc.url is not None:
        fname = Path(desc.path).name if desc.path else Path(desc.url.split("?")[0]).name or f"{desc.name}.h5ad"
        candidates.append(download_root() / desc.name / fname)
    local = next((c for c in candidates if c.exists()), None)
    if local is None:
        if desc.url is None:
            raise DataError(f"dataset {desc.name!r}: {candidates[0]} not found; set STMM_DATA to the folder that "
                            f"holds {desc.path}")
        local = candidates[-1]
        _download(desc, local)
    verified = False
    if desc.sha256 is not None and local.is_file():
        got = sha256_file(local)
        if got != desc.sha256:
            raise DataError(f"dataset {desc.name!r}: {local} has sha256 {got[:16]}…, expected {desc.sha256[:16]}…; "
                            "the file is not the registered one (replace it, or benchmark it by path)")
        verified = True
    return ResolvedDataset(descriptor=desc, local_path=str(local), verified=verified)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.endswith(".h5ad") or Path(text).exists()


def select(items: list[str] | None, default: list[str], label: str | None = None) -> list[DatasetDescriptor]:
    """Descriptors for names, glob patterns over registered names (``her2st-C*``) or paths to sections.

    A path becomes a descriptor named after the file (no checksum); *label* sets its label column.
    """
    out: list[DatasetDescriptor] = []
    for item in items or default:
        if item in BUILTIN:
            out.append(BUILTIN[item])
        elif any(ch in item for ch in "*?[") and not _looks_like_path(item):
            hits = [d for n, d in BUILTIN.items() if fnmatch.fnmatchcase(n, item)]
            if not hits:
                raise DataError(f"--datasets {item!r} matches no registered dataset; registered: "
                                f"{', '.join(BUILTIN)} (or give a path to an .h5ad)")
            out.extend(hits)
        elif _looks_like_path(item):
            p = Path(item).expanduser()
            if not p.exists():
                raise DataError(f"--datasets {item}: no such file or folder")
            stem = p.stem if p.is_file() else p.name
            name = "".join(c if c.isalnum() or c in "_.-" else "-" for c in stem) or "section"
            out.append(DatasetDescriptor(name=name, path=str(p.resolve()), label=label,
                                         description=f"user section {p.name}"))
        else:
            import difflib

            close = difflib.get_close_matches(item, list(BUILTIN), n=2, cutoff=0.5)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise DataError(f"--datasets: unknown dataset {item!r}{hint}; registered: {', '.join(BUILTIN)}, or give "
                            "a path to an .h5ad")
    # the same dataset given twice runs once; two different files with one name (A/sec.h5ad, B/sec.h5ad) both
    # run, the later one named sec_2 (as 'stmm run --data' names its sections)
    by_name: dict[str, str] = {}
    unique = []
    for d in out:
        if by_name.get(d.name) == d.path:
            continue
        if d.name in by_name:
            i = 2
            while f"{d.name}_{i}" in by_name:
                i += 1
            d = d.model_copy(update={"name": f"{d.name}_{i}"})
        by_name[d.name] = d.path
        unique.append(d)
    if label is not None:
        unique = [d if d.label else d.model_copy(update={"label": label}) for d in unique]
    return unique
