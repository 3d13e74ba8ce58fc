"""A local stand-in for the Hugging Face Hub (huggingface.co cannot be reached from the test machines).

It speaks the parts of the Hub's HTTP protocol `huggingface_hub` uses, as the Hub answers them:
- `GET /api/models/ORG/REPO[/revision/REV]?blobs=true`: the repo's info with `siblings` (size, and
  `lfs.sha256` for LFS files);
- `GET /api/models?search=Q`: model search;
- `HEAD|GET /ORG/REPO/resolve/REV/PATH`: a 302 to a second server (the "CDN", another origin, as
  the Hub's is) carrying `X-Repo-Commit`, `X-Linked-Etag` (the sha256) and `X-Linked-Size`;
- `GET /lfs/SHA256` on the CDN: the bytes, honouring `Range` (206 + `Content-Range`);
- errors as the Hub sends them: 401 + `X-Error-Code: RepoNotFound` for a missing (or private, no
  token) repo, 404 + `EntryNotFound` for a missing file, `RevisionNotFound` for a bad revision.

Faults for tests: `cut_after_bytes` (the next CDN transfer sends that many bytes and drops the
connection; with `down_after_cut` an outage follows), `outage` (every CDN request is dropped before
a response), `chunk_delay_s` (a slow link), `stall_after_bytes` (the next CDN transfer sends that
many bytes and then waits, sending nothing, until `release` is set: a download that is certainly
in flight when a test interrupts it). Every request is recorded.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SEND_CHUNK_BYTES = 1 << 16
STALL_RELEASE_TIMEOUT_S = 60.0  # a stalled transfer resumes by itself after this, whatever the test did


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    private_token: str = ""  # non-empty: the repo answers only requests bearing this token
    commit: str = COMMIT


@dataclass
class Request:
    server: str  # "hub" or "cdn"
    method: str
    path: str
    range: str
    authorization: str


@dataclass
class HubState:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    cut_after_bytes: int | None = None
    down_after_cut: bool = False  # after the cut, an outage begins (no retry gets anywhere)
    outage: bool = False
    chunk_delay_s: float = 0.0  # a slow link: the CDN sleeps this long after every chunk it sends
    stall_after_bytes: int | None = None
    release: threading.Event = field(default_factory=threading.Event)
    blobs: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cdn_url: str = ""

    def add_repo(self, repo_id: str, files: dict[str, bytes], private_token: str = "") -> None:
        self.repos[repo_id] = FakeRepo(files, private_token)
        for data in files.values():
            self.blobs[hashlib.sha256(data).hexdigest()] = data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState
    role: str

    def log_message(self, format: str, *args: object) -> None:  # the test output stays readable
        return

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        with self.state.lock:
            self.state.requests.append(
                Request(
                    self.role,
                    method,
                    url.path,
                    self.headers.get("Range", ""),
                    self.headers.get("Authorization", ""),
                )
            )
        if self.role == "cdn":
            self._cdn(method, url.path)
        elif url.path == "/api/models":
            self._search(parse_qs(url.query).get("search", [""])[0])
        elif url.path.startswith("/api/models/"):
            self._model_info(unquote(url.path[len("/api/models/") :]))
        else:
            self._resolve(method, unquote(url.path.lstrip("/")))

    def _repo(self, repo_id: str) -> FakeRepo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None:
            return None
        if repo.private_token and self.headers.get("Authorization", "") != f"Bearer {repo.private_token}":
            return None  # the Hub answers a private repo without the token exactly like a missing one
        return repo

    def _model_info(self, rest: str) -> None:
        parts = rest.split("/")
        repo_id, revision = "/".join(parts[:2]), "/".join(parts[3:]) if parts[2:3] == ["revision"] else "main"
        repo = self._repo(repo_id)
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository not found")
        if revision not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        siblings = []
        for name, data in sorted(repo.files.items()):
            sha = hashlib.sha256(data).hexdigest()
            lfs = {"sha256": sha, "size": len(data), "pointerSize": 134}
            siblings.append({"rfilename": name, "size": len(data), "blobId": sha[:40], "lfs": lfs})
        body = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": bool(repo.private_token)}
        body |= {"siblings": siblings, "tags": ["gguf"], "downloads": 0, "likes": 0}
        self._json(200, body)

    def _search(self, query: str) -> None:
        found = [
            {"id": repo_id, "modelId": repo_id, "tags": ["gguf"], "downloads": 0, "likes": 0}
            for repo_id, repo in sorted(self.state.repos.items())
            if query.lower() in repo_id.lower() and not repo.private_token
        ]
        self._json(200, found)

    def _resolve(self, method: str, path: str) -> None:
        try:
            org, name, kind, revision, file = path.split("/", 4)
        except ValueError:
            return self._error(404, "", "Not found")
        repo = self._repo(f"{org}/{name}")
        if kind != "resolve" or repo is None:
            return self._error(401, "RepoNotFound", "Repository not found")
        if revision not in ("main", repo.commit):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        data = repo.files.get(file)
        if data is None:
            return self._error(404, "EntryNotFound", f"{file} does not exist", commit=repo.commit)
        sha = hashlib.sha256(data).hexdigest()
        self.send_response(302)
        self.send_header("Location", f"{self.state.cdn_url}/lfs/{sha}")
        self.send_header("X-Repo-Commit", repo.commit)
        self.send_header("X-Linked-Etag", f'"{sha}"')
        self.send_header("X-Linked-Size", str(len(data)))
        self.send_header("ETag", f'"{sha[:40]}"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _cdn(self, method: str, path: str) -> None:
        data = self.state.blobs.get(path.removeprefix("/lfs/"))
        if data is None:
            return self._error(404, "", "no such blob")
        if self.state.outage:
            self.close_connection = True
            self.connection.shutdown(2)
            return
        start = _range_start(self.headers.get("Range", ""))
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if method == "HEAD":
            return
        self._send_body(body)

    def _send_body(self, body: bytes) -> None:
        with self.state.lock:
            cut, self.state.cut_after_bytes = self.state.cut_after_bytes, None
        limit = len(body) if cut is None else min(cut, len(body))
        with self.state.lock:
            stall, self.state.stall_after_bytes = self.state.stall_after_bytes, None
        for offset in range(0, limit, SEND_CHUNK_BYTES):
            if stall is not None and offset >= stall:
                self.wfile.flush()
                self.state.release.wait(STALL_RELEASE_TIMEOUT_S)
                stall = None
            self.wfile.write(body[offset : min(offset + SEND_CHUNK_BYTES, limit)])
            if self.state.chunk_delay_s:
                time.sleep(self.state.chunk_delay_s)
        if cut is not None:
            self.state.outage = self.state.down_after_cut
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # mid-body: the client sees a broken transfer

    def _json(self, status: int, body: object) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, status: int, code: str, message: str, commit: str = "") -> None:
        raw = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)


def _range_start(header: str) -> int:
    """`bytes=N-` -> N (the only form huggingface_hub sends); no header -> 0."""
    if not header.startswith("bytes="):
        return 0
    return int(header[len("bytes=") :].split("-", 1)[0] or 0)


class FakeHub:
    """Two threaded HTTP servers on 127.0.0.1: the Hub (`url`, for HF_ENDPOINT) and its CDN."""

    def __init__(self) -> None:
        self.state = HubState()
        self._servers = [self._server("hub"), self._server("cdn")]
        self.url = f"http://127.0.0.1:{self._servers[0].server_port}"
        self.state.cdn_url = f"http://127.0.0.1:{self._servers[1].server_port}"
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in self._servers]

    def _server(self, role: str) -> ThreadingHTTPServer:
        handler = type(f"{role}Handler", (_Handler,), {"state": self.state, "role": role})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        return server

    def __enter__(self) -> FakeHub:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes], private_token: str = "") -> None:
        self.state.add_repo(repo_id, files, private_token)

    def requests(self, server: str = "", method: str = "") -> list[Request]:
        with self.state.lock:
            return [
                r
                for r in self.state.requests
                if (not server or r.server == server) and (not method or r.method == method)
            ]
