"""The one way stmm writes results: checked before any work, staged beside the target, moved into place whole.

Every writer (``fit``/``run``/``demo`` run folders, ``embed``/``predict`` files, ``pull -o``, ``benchmark -o``,
``compose -o``, ``evaluate -o``) goes through this module:

* :func:`check_output` runs before any data is read: the target must be creatable (a file is created and
  removed in its nearest existing folder, so read-only file systems and missing permissions fail now, not after
  the fit), a folder target must be empty, or hold an earlier stmm run and ``--overwrite`` be given, and
  stale ``.stmm-partial-*`` stages of killed runs into the same place are removed.
* :func:`atomic_dir` / :func:`atomic_file` stage everything in a hidden ``.stmm-partial-<name>.<pid>.<rand>``
  sibling and rename it into place only when complete; a killed or failed run never leaves a complete-looking
  result, and an overwritten run folder is replaced whole (never mixed with the old one's files).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from stmm_core.errors import StmmError

PARTIAL = ".stmm-partial-"
#: Files whose presence marks a folder as something stmm wrote (a run, a pulled pipeline, a benchmark folder).
RUN_MARKERS = ("spec.json", "manifest.json", "metrics.json", "magic.json", "pulled.json", "results")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


_TAIL = re.compile(r"(\d+)\.[0-9a-f]{8}(\.[^.]*)?")


def _stage_pid(rest: str) -> int | None:
    """The writer's process id in the tail ``<pid>.<rand>[.suffix]`` of a stage name; None when *rest* is not
    such a tail (e.g. the stage of another target whose name extends this one: ``run`` vs ``run.v2``)."""
    m = _TAIL.fullmatch(rest)
    return int(m.group(1)) if m else None


def remove_stale_partials(target: Path) -> list[Path]:
    """Remove stages left by killed runs into *target* (in its parent, and the older in-folder kind)."""
    removed: list[Path] = []
    places = [(target.parent, f"{PARTIAL}{target.name}.")]
    if target.is_dir():
        places.append((target, PARTIAL))
    for folder, prefix in places:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if not p.name.startswith(prefix):
                continue
            if folder == target.parent:
                pid = _stage_pid(p.name[len(prefix):])
                if pid is None or _pid_alive(pid):
                    continue  # another target's stage, or a live run writing there right now
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    p.unlink()
            removed.append(p)
    return removed


def probe_writable(folder: Path, what: str) -> None:
    """Create and remove a file in *folder*; a clear error when that fails (read-only, no permission, full)."""
    probe = folder / f"{PARTIAL}probe.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StmmError(f"{what}: cannot write in {folder} ({reason}); choose another place") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _nearest_existing(path: Path) -> Path:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def is_stmm_output(folder: Path) -> bool:
    """True when *folder* holds something stmm wrote (a run folder, a pulled pipeline, benchmark results)."""
    return any((folder / m).exists() for m in RUN_MARKERS)


#: Files of a run folder that its manifest does not hash but the fit wrote (its results).
_RUN_OUTPUTS = ("manifest.json", "pulled.json", "result.h5ad", "report.html", "markers.csv", "markers.png")


def _foreign(path: Path) -> bool:
    """An existing output file that stmm did not write: an ``.h5ad`` without an ``uns['stmm…']`` entry (embed,
    predict and fit results carry one), or any other file that is not a JSON object (specs and metrics are)."""
    import json

    if path.suffix.lower() == ".h5ad":
        try:
            import h5py

            with h5py.File(path, "r") as fh:
                uns = fh.get("uns")
                return uns is None or not any(k == "stmm" or k.startswith("stmm_") for k in uns.keys())
        except (OSError, ValueError):
            return True
    try:  # specs and metrics (whatever the suffix); anything else (an image, a table, a data file) is not ours
        return path.stat().st_size > 50_000_000 or not isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return True


def _listed_in_manifest(path: Path) -> bool:
    """*path* is a file of a saved pipeline (its ``manifest.json`` is beside it): one the manifest lists with its
    sha256, or one of the run's results."""
    import json

    manifest = path.parent / "manifest.json"
    if not (path.exists() and manifest.is_file()):
        return False
    try:
        files = json.loads(manifest.read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(files, dict) and (path.name in files or path.name in _RUN_OUTPUTS)


def check_output(path: str | Path, *, flag: str = "-o", kind: str = "dir", overwrite: bool = False,
                 resume: bool = False) -> Path:
    """Validate the target of a writer before any work (see the module docstring); returns the path.

    ``kind``: ``"dir"`` (a run folder, replaced whole) or ``"file"``. ``resume``: the folder may hold the
    writer's own earlier output to continue (magic ``--stage 2``). An unrelated non-empty folder is refused even
    with ``--overwrite``: stmm never deletes files it did not write."""
    path = Path(path).expanduser()
    what = f"{flag} {path}"
    if kind == "file":
        if path.is_dir():
            raise StmmError(f"{what} is a folder; give a file name (e.g. {path / 'out.h5ad'})")
        if path.name in ("", ".", ".."):
            raise StmmError(f"{what} is not a file name")
        if path.is_file() and _foreign(path):
            raise StmmError(f"{what} exists and is not a file stmm wrote; give a new file name (stmm never replaces "
                            "files it did not write)")
        if _listed_in_manifest(path):
            raise StmmError(f"{what} is a file of the saved pipeline in {path.parent}: writing it would "
                            "break or replace that run's own files; give another file name")
    elif path.exists() and not path.is_dir():
        raise StmmError(f"{what} exists and is not a folder; give a new folder name")
    elif not resume and path.exists() and Path.cwd().resolve().is_relative_to(path.resolve()):
        raise StmmError(f"{what} is the current folder (or holds it); give a new folder name, e.g. {flag} run1")
    parent = _nearest_existing(path)
    if not parent.is_dir():
        raise StmmError(f"{what}: {parent} is a file, so the {'file' if kind == 'file' else 'folder'} cannot "
                        "be created there")
    if kind == "dir" and path.is_dir():
        entries = [p for p in path.iterdir() if not p.name.startswith(PARTIAL)]
        if entries and not resume:
            if not is_stmm_output(path):
                raise StmmError(f"{what} is a non-empty folder that is not a stmm output ({len(entries)} entries, "
                                f"e.g. {entries[0].name}); give a new or empty folder with {flag}")
            if not overwrite:
                raise StmmError(f"{what} already holds an earlier result; give a new folder with {flag}, or add "
                                "--overwrite to replace it whole")
    probe_writable(parent, what)  # the stage is created beside the target
    if kind == "dir" and path.is_dir():  # an existing folder is written in (benchmark) or replaced whole (fit)
        probe_writable(path, what)
    if path.parent.is_dir():
        remove_stale_partials(path)
    return path


def check_not_input(output: str | Path, inputs: dict[str, object], *, flag: str = "-o",
                    also: tuple[str, ...] = ()) -> None:
    """Refuse an output file that is one of the command's inputs (``{"--data": path, …}``): writing it would
    replace the input. *also*: suffixes of files written beside the output (``.png``: predict's plot)."""
    out = Path(output).expanduser()
    for target in (out, *(out.with_suffix(sfx) for sfx in also)):
        where = target.resolve()
        for name, value in inputs.items():
            if value is not None and Path(str(value)).expanduser().resolve() == where:
                what = "" if target == out else f": it also writes {target.name}, which"
                raise StmmError(f"{flag} {output}{what} is the {name} input; give another file name (an input is "
                                "never overwritten)")


def _stage_name(target: Path) -> str:
    return f"{PARTIAL}{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces *target* whole (an earlier folder is removed
    only after the new one is complete); on any error or signal nothing is left but the old target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = target.parent / _stage_name(target)
    stage.mkdir()
    try:
        yield stage
        old = None
        if target.exists():
            old = target.parent / _stage_name(target)
            os.replace(target, old)
        os.replace(stage, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def discard(target: str | Path) -> None:
    """Remove an earlier output folder whole (renamed aside first, so no half-deleted folder keeps its name)."""
    target = Path(target)
    if target.is_dir():
        aside = target.parent / _stage_name(target)
        os.replace(target, aside)
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside *target*; renamed to *target* when the block ends without error."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / (_stage_name(target) + (target.suffix or ""))
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_files(*targets: str | Path) -> Iterator[list[Path]]:
    """Several files that appear together: all are renamed into place only when every one was written."""
    paths = [Path(t) for t in targets]
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(_staged(p)) for p in paths]
        yield tmps
        for tmp, p in zip(tmps, paths):
            os.replace(tmp, p)


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / (_stage_name(target) + (target.suffix or ""))
    try:
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text(target: str | Path, text: str) -> Path:
    """Atomic text write."""
    with atomic_file(target) as tmp:
        tmp.write_text(text)
    return Path(target)

