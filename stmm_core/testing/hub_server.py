"""A loopback stand-in for the Hugging Face Hub, for tests that must not touch the internet.

It speaks the subset of the Hub's HTTP API that ``huggingface_hub`` (and through it timm's ``hf-hub:`` and
transformers' ``from_pretrained``) use to download and upload model repositories:

* downloads: ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (``X-Repo-Commit``, ``ETag``, ``Content-Length``,
  ``Range``), ``GET /api/models/{repo}[/revision/{rev}]``, ``GET /api/models/{repo}/tree/{rev}[/{path}]``;
* uploads: ``POST /api/repos/create``, ``POST /api/models/{repo}/preupload/{rev}`` (every file "regular":
  no LFS, no Xet), ``POST /api/models/{repo}/commit/{rev}`` (ndjson), ``POST /api/models/{repo}/branch/{name}``,
  ``POST /api/validate-yaml``, ``GET /api/whoami-v2``;
* errors with the Hub's ``X-Error-Code`` headers: ``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``,
  ``GatedRepo``.

Repositories live in memory with git-like history: each commit is an immutable snapshot of the file tree
with a 40-hex id and a parent; branches and tags point at commits. Repositories can be private (invisible
without a token that has access) or gated (metadata visible, files refused without access).

Usage::

    with HubServer() as hub:
        hub.create_repo("org/model", files={"config.json": b"{}"})
        env = hub.client_env(tmp_path)          # HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, ... for a subprocess
        ...

or, in pytest, the ``hub_server`` fixture of :mod:`stmm_core.testing.pytest_plugin`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

#: The token :class:`HubServer` accepts for every repository (reads and writes) unless told otherwise.
DEFAULT_TOKEN = "hf_loopback_test_token"


@dataclass
class Commit:
    """One immutable snapshot of a repository's files."""

    oid: str
    parent: str | None
    message: str
    files: dict[str, bytes]
    created: float = field(default_factory=time.time)


@dataclass
class Repo:
    """A model repository: commits, branches, tags and access flags."""

    repo_id: str
    private: bool = False
    gated: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str | None) -> Commit | None:
        """The commit a branch, tag or (full) commit id names, or None."""
        rev = revision or "main"
        oid = self.branches.get(rev) or self.tags.get(rev)
        if oid is None and rev in self.commits:
            oid = rev
        return self.commits.get(oid) if oid else None


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """A threaded HTTP server on 127.0.0.1 that behaves like the Hub for ``huggingface_hub``.

    Attributes:
        endpoint: ``http://127.0.0.1:<port>`` (set as ``HF_ENDPOINT`` for clients).
        token: a token with read and write access to every repository.
        requests: ``(method, path)`` of every request served, for assertions.
    """

    def __init__(self, token: str = DEFAULT_TOKEN, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        #: token -> repos it may read when gated/private ("*" = all); the default token has full access.
        self.access: dict[str, set[str]] = {token: {"*"}}
        self._lock = threading.RLock()
        self._counter = 0
        self._httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="stmm-hub-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- client configuration ------------------------------------------------------------------------------------

    def client_env(self, home: str | Path, token: bool = True) -> dict[str, str]:
        """Environment variables that point ``huggingface_hub`` at this server with a cache under *home*."""
        home = Path(home)
        env = {
            "HF_ENDPOINT": self.endpoint,
            "HF_HOME": str(home),
            "HF_HUB_CACHE": str(home / "hub"),
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0",
            "HF_HUB_ETAG_TIMEOUT": "5",
            "HF_HUB_DOWNLOAD_TIMEOUT": "10",
        }
        if token:
            env["HF_TOKEN"] = self.token
        return env

    def activate(self, monkeypatch: Any, home: str | Path, token: bool = True) -> dict[str, str]:
        """Point this process's ``huggingface_hub`` (and timm/transformers through it) at the server.

        Sets the environment with *monkeypatch* and patches the values ``huggingface_hub`` read at import
        (endpoint, URL template, offline flag, cache folder, Xet switch). Returns the environment set.
        """
        from huggingface_hub import constants

        env = self.client_env(home, token=token)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        if not token:
            monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            self.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", env["HF_HUB_CACHE"])
        monkeypatch.setattr(constants, "HF_HOME", env["HF_HOME"])
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
        return env

    # -- repository management (direct, no HTTP) -----------------------------------------------------------------

    def create_repo(self, repo_id: str, files: dict[str, bytes | str] | None = None, *, private: bool = False,
                    gated: bool = False, message: str = "initial commit") -> str | None:
        """Create *repo_id* (optionally with a first commit on ``main``); returns that commit's id."""
        with self._lock:
            if repo_id in self.repos:
                raise ValueError(f"repo {repo_id} exists")
            self.repos[repo_id] = Repo(repo_id, private=private, gated=gated)
            if files:
                return self.commit(repo_id, files, message=message)
            return None

    def commit(self, repo_id: str, add: dict[str, bytes | str] | None = None, *, delete: list[str] | None = None,
               branch: str = "main", message: str = "update") -> str:
        """Add/replace and delete files on *branch*; returns the new commit id."""
        with self._lock:
            repo = self.repos[repo_id]
            parent = repo.resolve(branch) if branch in repo.branches else None
            files = dict(parent.files) if parent else {}
            for path in delete or []:
                files = {p: b for p, b in files.items() if p != path and not p.startswith(path.rstrip("/") + "/")}
            for path, data in (add or {}).items():
                files[path] = data.encode() if isinstance(data, str) else bytes(data)
            self._counter += 1
            h = hashlib.sha1(f"{repo_id}|{parent.oid if parent else ''}|{message}|{self._counter}".encode())
            for path in sorted(files):
                h.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
            oid = h.hexdigest()
            repo.commits[oid] = Commit(oid, parent.oid if parent else None, message, files)
            repo.branches[branch] = oid
            return oid

    def tag(self, repo_id: str, tag: str, revision: str = "main") -> str:
        with self._lock:
            repo = self.repos[repo_id]
            c = repo.resolve(revision)
            if c is None:
                raise KeyError(revision)
            repo.tags[tag] = c.oid
            return c.oid

    def grant(self, token: str, repo_id: str) -> None:
        """Give *token* access to a gated or private *repo_id*."""
        with self._lock:
            self.access.setdefault(token, set()).add(repo_id)

    def tamper(self, repo_id: str, path: str, data: bytes, revision: str = "main") -> None:
        """Replace a file's bytes *in place* (same commit id): a corrupted blob, as a faulty mirror would serve."""
        with self._lock:
            commit = self.repos[repo_id].resolve(revision)
            assert commit is not None
            commit.files[path] = data

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        commit = self.repos[repo_id].resolve(revision)
        return dict(commit.files) if commit else {}

    # -- access control ------------------------------------------------------------------------------------------

    def _can_read(self, repo: Repo, token: str | None) -> bool:
        if not (repo.private or repo.gated):
            return True
        allowed = self.access.get(token or "", set())
        return "*" in allowed or repo.repo_id in allowed

    def _can_write(self, token: str | None) -> bool:
        return token is not None and "*" in self.access.get(token, set())


# ---------------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------------


class _HTTPError(Exception):
    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "stmm-loopback-hub/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
            pass

        # -- plumbing --------------------------------------------------------------------------------------------

        def _token(self) -> str | None:
            auth = self.headers.get("Authorization", "")
            return auth[7:].strip() if auth.lower().startswith("bearer ") else None

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                return self.rfile.read(n)
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return b""

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  content_type: str = "application/json", head: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if "Content-Length" not in (headers or {}):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head and body:
                self.wfile.write(body)

        def _json(self, status: int, data: Any, head: bool = False) -> None:
            self._send(status, json.dumps(data).encode(), head=head)

        def _error(self, err: _HTTPError, head: bool = False) -> None:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, json.dumps({"error": err.message}).encode(), headers=headers, head=head)

        def _dispatch(self, method: str) -> None:
            parsed = urllib.parse.urlsplit(self.path)
            hub.requests.append((method, parsed.path))
            query = dict(urllib.parse.parse_qsl(parsed.query))
            parts = [urllib.parse.unquote(p) for p in parsed.path.split("/") if p]
            head = method == "HEAD"
            try:
                if parts[:1] == ["api"]:
                    self._api(method, parts[1:], query)
                elif len(parts) >= 4 and parts[2] == "resolve":
                    self._resolve(method, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
                else:
                    raise _HTTPError(404, None, f"no route for {method} {parsed.path}")
            except _HTTPError as err:
                self._error(err, head=head)
            except (BrokenPipeError, ConnectionResetError):  # pragma: no cover - client went away
                pass

        def do_HEAD(self) -> None:  # noqa: N802
            self._dispatch("HEAD")

        def do_GET(self) -> None:  # noqa: N802
            self._dispatch("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._dispatch("POST")

        # -- repository lookup -----------------------------------------------------------------------------------

        def _repo(self, repo_id: str, *, files: bool) -> Repo:
            repo = hub.repos.get(repo_id)
            token = self._token()
            if repo is None or (repo.private and not hub._can_read(repo, token)):
                raise _HTTPError(401 if token is None else 404, "RepoNotFound",
                                 f"Repository Not Found for url: {repo_id}.")
            if files and repo.gated and not hub._can_read(repo, token):
                raise _HTTPError(401 if token is None else 403, "GatedRepo",
                                 f"Access to model {repo_id} is restricted. You must have access to it and be "
                                 "authenticated to access it. Please log in.")
            return repo

        def _commit(self, repo: Repo, revision: str) -> Commit:
            commit = repo.resolve(revision)
            if commit is None:
                raise _HTTPError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return commit

        # -- downloads -------------------------------------------------------------------------------------------

        def _resolve(self, method: str, repo_id: str, revision: str, path: str) -> None:
            repo = self._repo(repo_id, files=True)
            commit = self._commit(repo, revision)
            if path not in commit.files:
                raise _HTTPError(404, "EntryNotFound", f"{path} does not exist at {revision}")
            data = commit.files[path]
            etag = f'"{hashlib.sha256(data).hexdigest()}"'
            headers = {"X-Repo-Commit": commit.oid, "ETag": etag, "Accept-Ranges": "bytes"}
            status, body = 200, data
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and method == "GET":
                start_s, _, end_s = rng[6:].partition("-")
                start = int(start_s or 0)
                end = int(end_s) if end_s else len(data) - 1
                body = data[start : end + 1]
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            headers["Content-Length"] = str(len(body))
            self._send(status, body, headers=headers, content_type="application/octet-stream",
                       head=method == "HEAD")

        def _info(self, repo: Repo, commit: Commit) -> dict[str, Any]:
            return {
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": commit.oid,
                "private": repo.private,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.created)),
                "siblings": [{"rfilename": p} for p in sorted(commit.files)],
            }

        def _tree(self, commit: Commit, prefix: str, recursive: bool) -> list[dict[str, Any]]:
            prefix = prefix.strip("/")
            out: list[dict[str, Any]] = []
            dirs: set[str] = set()
            for path in sorted(commit.files):
                if prefix and not path.startswith(prefix + "/"):
                    continue
                rest = path[len(prefix) + 1 :] if prefix else path
                segs = rest.split("/")
                base = f"{prefix}/" if prefix else ""
                for i in range(1, len(segs)):
                    d = base + "/".join(segs[:i])
                    if (recursive or i == 1) and d not in dirs:
                        dirs.add(d)
                        out.append({"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest()})
                if len(segs) == 1 or recursive:
                    data = commit.files[path]
                    out.append({"type": "file", "path": path, "size": len(data), "oid": _git_blob_sha1(data)})
            return out

        def _api(self, method: str, parts: list[str], query: dict[str, str]) -> None:
            if parts == ["whoami-v2"] and method == "GET":
                token = self._token()
                if token is None or token not in hub.access:
                    raise _HTTPError(401, None, "Invalid credentials in Authorization header")
                return self._json(200, {"type": "user", "name": "loopback", "auth": {"accessToken": {
                    "role": "write" if hub._can_write(token) else "read"}}})
            if parts == ["validate-yaml"] and method == "POST":
                self._body()
                return self._json(200, {"errors": [], "warnings": []})
            if parts == ["repos", "create"] and method == "POST":
                return self._create_repo(json.loads(self._body() or b"{}"))
            if len(parts) >= 3 and parts[0] == "models":
                repo_id = f"{parts[1]}/{parts[2]}"
                rest = parts[3:]
                if method in ("GET", "HEAD"):
                    if not rest or rest[0] == "revision":
                        repo = self._repo(repo_id, files=False)
                        commit = self._commit(repo, "/".join(rest[1:]) if rest else "main")
                        return self._json(200, self._info(repo, commit), head=method == "HEAD")
                    if rest[0] == "tree" and len(rest) >= 2:
                        repo = self._repo(repo_id, files=False)
                        commit = self._commit(repo, rest[1])
                        recursive = query.get("recursive", "").lower() in ("1", "true")
                        return self._json(200, self._tree(commit, "/".join(rest[2:]), recursive))
                    if rest[0] == "refs":
                        repo = self._repo(repo_id, files=False)
                        return self._json(200, {
                            "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": o}
                                         for b, o in sorted(repo.branches.items())],
                            "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": o}
                                     for t, o in sorted(repo.tags.items())],
                            "converts": []})
                if method == "POST" and rest:
                    if not hub._can_write(self._token()):
                        raise _HTTPError(401, None, "Invalid credentials in Authorization header")
                    repo = self._repo(repo_id, files=False)
                    if rest[0] == "preupload":
                        payload = json.loads(self._body() or b"{}")
                        return self._json(200, {"files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                            for f in payload.get("files", [])]})
                    if rest[0] == "commit" and len(rest) >= 2:
                        return self._commit_ndjson(repo, "/".join(rest[1:]), self._body())
                    if rest[0] == "branch" and len(rest) >= 2:
                        return self._create_branch(repo, "/".join(rest[1:]), json.loads(self._body() or b"{}"))
            raise _HTTPError(404, None, f"no API route for {method} /api/{'/'.join(parts)}")

        # -- uploads ---------------------------------------------------------------------------------------------

        def _create_repo(self, payload: dict[str, Any]) -> None:
            if not hub._can_write(self._token()):
                raise _HTTPError(401, None, "Invalid credentials in Authorization header")
            if payload.get("type") not in (None, "model"):
                raise _HTTPError(400, None, "the loopback hub only hosts model repositories")
            name, org = payload.get("name"), payload.get("organization")
            repo_id = f"{org}/{name}" if org else f"loopback/{name}"
            with hub._lock:
                if repo_id in hub.repos:  # the Hub answers 409 with the URL (create_repo(exist_ok=True) reads it)
                    self._send(409, json.dumps({"error": "You already created this model repo",
                                                "url": f"{hub.endpoint}/{repo_id}"}).encode(),
                               headers={"X-Error-Message": "You already created this model repo"})
                    return
                private = payload.get("private") is True or payload.get("visibility") == "private"
                hub.repos[repo_id] = Repo(repo_id, private=private)
                hub.commit(repo_id, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                           message="initial commit")
            self._json(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id, "id": repo_id})

        def _create_branch(self, repo: Repo, branch: str, payload: dict[str, Any]) -> None:
            with hub._lock:
                if branch in repo.branches:
                    raise _HTTPError(409, None, f"Reference already exists: refs/heads/{branch}")
                start = self._commit(repo, payload.get("startingPoint") or "main")
                repo.branches[branch] = start.oid
            self._json(200, {})

        def _commit_ndjson(self, repo: Repo, revision: str, body: bytes) -> None:
            add: dict[str, bytes] = {}
            delete: list[str] = []
            message = "update"
            for line in body.splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                key, value = item.get("key"), item.get("value", {})
                if key == "header":
                    message = value.get("summary") or message
                    parent = value.get("parentCommit")
                    if parent and repo.branches.get(revision) != parent:
                        raise _HTTPError(412, None, "A commit has happened since. Please refresh and try again.")
                elif key == "file":
                    content = value["content"]
                    add[value["path"]] = base64.b64decode(content) if value.get("encoding") == "base64" \
                        else content.encode()
                elif key in ("deletedFile", "deletedFolder"):
                    delete.append(value["path"])
                else:
                    raise _HTTPError(400, None, f"the loopback hub does not support {key!r} operations")
            with hub._lock:
                if revision not in repo.branches:
                    if _is_commit_id(revision) or revision in repo.tags:
                        raise _HTTPError(400, None, f"cannot commit to {revision}: not a branch")
                    raise _HTTPError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                oid = hub.commit(repo.repo_id, add, delete=delete, branch=revision, message=message)
            self._json(200, {"commitUrl": f"{hub.endpoint}/{repo.repo_id}/commit/{oid}", "commitOid": oid,
                             "commitMessage": message, "pullRequestUrl": None, "success": True})

    return Handler


def _is_commit_id(text: str) -> bool:
    return len(text) == 40 and all(c in "0123456789abcdef" for c in text)
