"""Push a saved pipeline to the Hugging Face Hub and pull one back, pinned and verified.

Pull: the revision is resolved to a commit (recorded in ``pulled.json``); an unpinned pull warns and says
which commit to pin. Only the files the manifest lists are downloaded (``manifest.json`` first), pickle
formats are refused unless allowed explicitly, and every file is checked against its sha256 after download
— also when it comes from the cache. Offline (``--offline`` / ``HF_HUB_OFFLINE``) only the cache is used.
A pinned pull whose snapshot is complete in the cache makes no network request at all.

Errors are one line: gated or private repositories without a token say to request access and set
``HF_TOKEN``; the token itself is never printed or written.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stmm_core.errors import StmmError
from stmm_core.hub.manifest import MANIFEST, is_pickle, read_manifest
from stmm_core.hub.pipeline_dir import LoadedPipeline, load_pipeline
from stmm_core.hub.settings import HubSettings, hub_settings, is_commit, parse_ref

log = logging.getLogger("stmm")
PULL_RECORD = "pulled.json"


class HubAccessError(StmmError):
    """The Hub refused, could not find, or could not be reached for a repository."""


@dataclass
class PullResult:
    """Where a pulled pipeline is and which commit it is."""

    repo_id: str
    revision: str | None
    commit: str
    path: Path
    pipeline: LoadedPipeline
    pinned: bool
    from_cache: bool
    seconds: float


def _hub_page(settings: HubSettings, repo_id: str) -> str:
    return f"{settings.endpoint}/{repo_id}"


def translate(exc: BaseException, repo_id: str, revision: str | None, settings: HubSettings,
              action: str = "pull") -> StmmError:
    """One clear message for a ``huggingface_hub`` error (never containing the token)."""
    from huggingface_hub import errors as e

    token_hint = "HF_TOKEN is set but its account has no access" if settings.token else "no HF_TOKEN is set"
    if isinstance(exc, e.GatedRepoError):
        return HubAccessError(
            f"{repo_id} is gated ({token_hint}): request access on {_hub_page(settings, repo_id)}, then set HF_TOKEN "
            "to a token of the account that was granted access"
        )
    if isinstance(exc, e.RevisionNotFoundError):
        return HubAccessError(f"revision {revision!r} of {repo_id} does not exist (not a branch, tag or commit of "
                              f"it); check the name or pin a commit from {_hub_page(settings, repo_id)}/commits")
    if isinstance(exc, e.RepositoryNotFoundError):
        extra = "" if settings.token else "; if it is private, set HF_TOKEN to a token with access"
        return HubAccessError(f"repository {repo_id} not found on {settings.endpoint}{extra}")
    if isinstance(exc, e.RemoteEntryNotFoundError):
        return HubAccessError(f"{repo_id}@{revision or 'main'} has no {MANIFEST}: it is not an stmm pipeline "
                              "(push one with 'stmm push')")
    if isinstance(exc, e.LocalEntryNotFoundError):
        return HubAccessError(f"{repo_id}@{revision or 'main'} is not in the local Hub cache ({settings.cache_dir}) "
                              "and the Hub is not used offline; pull it once online (without --offline / "
                              "HF_HUB_OFFLINE)")
    if isinstance(exc, e.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            what = "write to" if action == "push" else "read"
            return HubAccessError(f"the Hub refused to let this token {what} {repo_id} (HTTP {status}); set HF_TOKEN "
                                  f"to a token with {'write' if action == 'push' else 'read'} access")
        return HubAccessError(f"the Hub answered HTTP {status} for {repo_id}: {str(exc).splitlines()[0][:160]}")
    name = type(exc).__name__
    if "Connect" in name or "Timeout" in name or isinstance(exc, OSError):
        return HubAccessError(f"cannot reach {settings.endpoint} ({name}); check the network, or use the local "
                              "cache with --offline")
    return HubAccessError(f"{action} of {repo_id} failed ({name}: {str(exc).splitlines()[0][:160] if str(exc) else ''})")


# ---------------------------------------------------------------------------------------------------------------
# push
# ---------------------------------------------------------------------------------------------------------------


def push(folder: str | Path, repo_id: str, *, revision: str | None = None, private: bool = False,
         message: str | None = None, settings: HubSettings | None = None) -> dict[str, Any]:
    """Verify *folder* and upload its manifest-listed files (and the manifest) as one commit.

    Returns ``{"repo", "revision", "commit", "url", "files"}``.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    s = settings or hub_settings()
    repo_id, rev_in_ref = parse_ref(repo_id)
    branch = revision or rev_in_ref or "main"
    if is_commit(branch):
        raise StmmError(f"--revision {branch} is a commit id; push to a branch name (e.g. main or v1)")
    loaded = load_pipeline(folder)  # a broken folder is reported first: no network, token or connection fixes it
    if s.offline:
        raise StmmError("cannot push while offline (HF_HUB_OFFLINE is set); unset it to push")
    if not s.token:
        raise HubAccessError("pushing needs a Hub token with write access: set HF_TOKEN (it is never printed or "
                             "stored by stmm)")
    files = sorted(loaded.manifest["files"]) + [MANIFEST]
    api = HfApi(endpoint=s.endpoint, token=s.token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(Path(folder) / f)) for f in files]
        info = api.create_commit(repo_id, ops, commit_message=message or f"stmm pipeline {loaded.spec.hash()[:12]}",
                                 revision=branch)
    except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one line
        if isinstance(exc, StmmError):
            raise
        raise translate(exc, repo_id, branch, s, action="push") from None
    return {"repo": repo_id, "revision": branch, "commit": info.oid, "url": _hub_page(s, repo_id), "files": files}


# ---------------------------------------------------------------------------------------------------------------
# pull
# ---------------------------------------------------------------------------------------------------------------


def _cached_snapshot(s: HubSettings, repo_id: str, revision: str) -> Path | None:
    """The cached snapshot folder for a branch/tag/commit, without any network access (None: not cached)."""
    root = Path(s.cache_dir) / f"models--{repo_id.replace('/', '--')}"
    commit = revision
    if not is_commit(revision):
        ref = root / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    snap = root / "snapshots" / commit
    return snap if (snap / MANIFEST).is_file() else None


def check_reachable(s: HubSettings, timeout: float = 3.0) -> None:
    """Fail within *timeout* seconds, with a message saying so, when the Hub endpoint cannot be reached (instead
    of ``huggingface_hub``'s retries)."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(s.endpoint)
    host, port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
    if not host:
        raise HubAccessError(f"HF_ENDPOINT={s.endpoint!r} is not a URL (e.g. https://huggingface.co)")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise HubAccessError(f"cannot reach {s.endpoint} (network unreachable: {reason}); connect to the network, "
                             "or use a pipeline already in the local Hub cache: --offline (stmm pull / predict / embed) or "
                             "HF_HUB_OFFLINE=1 before any stmm command") from None


def pull(ref: str, out_dir: str | Path | None = None, *, offline: bool | None = None, allow_pickle: bool = False,
         settings: HubSettings | None = None, warn: Any = None, overwrite: bool = False) -> PullResult:
    """Resolve ``org/name[@rev]`` to a commit, download (or reuse) its files, verify them, optionally copy them
    to *out_dir* (with ``pulled.json`` recording repo, revision and commit)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    t0 = time.perf_counter()
    s = settings or hub_settings(offline=offline if offline else None)
    repo_id, revision = parse_ref(ref)
    if out_dir is not None:  # before any download
        from stmm_core.atomic import check_output

        out_dir = check_output(out_dir, kind="dir", overwrite=overwrite)
    pinned = is_commit(revision)
    from_cache = False
    snap: Path | None = None
    if pinned or s.offline:
        snap = _cached_snapshot(s, repo_id, revision or "main")
        from_cache = snap is not None
        if snap is None and s.offline:
            raise HubAccessError(f"{repo_id}@{revision or 'main'} is not in the local Hub cache ({s.cache_dir}); "
                                 "pull it once without --offline / HF_HUB_OFFLINE")
    if snap is not None:
        commit = snap.name
        manifest = read_manifest(snap, f"{repo_id}@{snap.name[:12]}")
        missing = [f for f in manifest["files"] if not (snap / f).exists()]
        if missing and s.offline:
            raise HubAccessError(f"{repo_id}@{commit}: {', '.join(missing)} not in the local cache; pull it once "
                                 "online")
        if missing:
            snap = None
    if snap is None:
        check_reachable(s)
        try:
            commit = _resolve_commit(s, repo_id, revision)
            mpath = Path(hf_hub_download(repo_id, MANIFEST, revision=commit, cache_dir=s.cache_dir,
                                         endpoint=s.endpoint, token=s.token))
            manifest = read_manifest(mpath.parent, f"{repo_id}@{commit[:12]}")
            names = sorted(manifest["files"])
            pickles = [n for n in names if is_pickle(n)]
            if pickles and not allow_pickle:
                raise StmmError(f"{repo_id}@{commit[:12]} contains pickle files ({', '.join(pickles)}), which can "
                                "execute code when loaded; they were not downloaded. Pass --allow-pickle to "
                                "download them anyway (stmm never unpickles them; it loads safetensors only)")
            snap = Path(snapshot_download(repo_id, revision=commit, allow_patterns=names + [MANIFEST],
                                          cache_dir=s.cache_dir, endpoint=s.endpoint, token=s.token))
            if not pinned:  # remember what the branch/tag pointed at, for later offline use (as huggingface_hub does)
                ref = Path(s.cache_dir) / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
                ref.parent.mkdir(parents=True, exist_ok=True)
                ref.write_text(commit)
        except StmmError:
            raise
        except Exception as exc:  # noqa: BLE001 - every Hub failure becomes one line
            raise translate(exc, repo_id, revision, s) from None
    if not pinned:
        msg = (f"{repo_id}@{revision or 'main'} is not pinned: it resolved to commit {commit}; pull "
               f"{repo_id}@{commit} for a reproducible result")
        (warn or log.warning)(msg)
    origin = f"{repo_id}@{commit[:12]}"
    loaded = load_pipeline(snap, allow_pickle=allow_pickle, origin=origin)
    path = snap
    if out_dir is not None:
        path = _export(snap, loaded.manifest, Path(out_dir), {
            "repo": repo_id, "revision": revision or "main", "commit": commit, "endpoint": s.endpoint,
        })
        loaded.path = path
    return PullResult(repo_id, revision, commit, path, loaded, pinned, from_cache, time.perf_counter() - t0)


def _resolve_commit(s: HubSettings, repo_id: str, revision: str | None) -> str:
    """The commit a revision names, asked from the Hub (or from the cache when offline)."""
    from huggingface_hub import HfApi

    if is_commit(revision):
        return str(revision)
    info = HfApi(endpoint=s.endpoint, token=s.token).model_info(repo_id, revision=revision or "main")
    if not info.sha:
        raise HubAccessError(f"the Hub did not return a commit for {repo_id}@{revision or 'main'}")
    return info.sha


def _export(snap: Path, manifest: dict[str, Any], out: Path, record: dict[str, Any]) -> Path:
    """Copy the verified files (dereferenced) to *out* atomically, with ``pulled.json``."""
    from stmm_core.atomic import atomic_dir

    with atomic_dir(out) as stage:
        for name in sorted(manifest["files"]) + [MANIFEST]:
            dest = stage / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(snap / name, dest)
        (stage / PULL_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out
