"""A local stand-in for the Hugging Face Hub: folders served in the Hub's URL layout, on 127.0.0.1.

Answers what ``huggingface_hub`` asks when it downloads a pinned file:

- ``GET /api/models/ORG/REPO/revision/REV[?blobs=true]``: the commit sha and, per file, its size, git
  blob id and (large files) LFS sha256;
- ``HEAD``/``GET /ORG/REPO/resolve/REV/FILE``: ``X-Repo-Commit``, ``ETag`` (the LFS sha256 of a large
  file, the git blob id of a small one), ``X-Linked-Etag``/``X-Linked-Size`` for large files,
  ``Content-Length``; ``Range`` for a resumed download. A branch name is answered with a redirect to
  the commit, as the Hub does.

``corrupt`` files are served with one byte changed while the metadata keeps the true hashes, the way
a damaged mirror or a tampered transfer would look.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class Repo:
    folder: Path
    commit: str
    corrupt: set[str] = field(default_factory=set)

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.folder.iterdir()) if p.is_file()}

    def sibling(self, name: str, data: bytes) -> dict[str, Any]:
        entry: dict[str, Any] = {"rfilename": name, "size": len(data), "blobId": git_blob_id(data)}
        if name.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"sha256": sha256(data), "size": len(data), "pointerSize": 134}
        return entry


class HubServer:
    """``with HubServer({"org/name": Repo(...)}) as hub:`` serves them at ``hub.endpoint``."""

    def __init__(self, repos: dict[str, Repo]) -> None:
        self.repos = repos
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def do_HEAD(self) -> None:
                server.answer(self, body=False)

            def do_GET(self) -> None:
                server.answer(self, body=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _send(self, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], data: bytes, body: bool) -> None:
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if body:
            h.wfile.write(data)

    def _error(self, h: BaseHTTPRequestHandler, status: int, code: str, body: bool) -> None:
        data = json.dumps({"error": code}).encode()
        self._send(h, status, {"Content-Type": "application/json", "X-Error-Code": code}, data, body)

    def _repo(self, parts: list[str]) -> tuple[str, Repo | None]:
        name = "/".join(parts[:2])
        return name, self.repos.get(name)

    def answer(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        url = urlparse(h.path)
        self.requests.append(f"{h.command} {url.path}")
        parts = [unquote(p) for p in url.path.split("/") if p]
        if parts[:2] == ["api", "models"] and len(parts) == 6 and parts[4] == "revision":
            name, repo = self._repo(parts[2:])
            if repo is None:
                return self._error(h, 404, "RepoNotFound", body)
            if parts[5] not in ("main", repo.commit):
                return self._error(h, 404, "RevisionNotFound", body)
            siblings = [repo.sibling(n, d) for n, d in repo.files().items()]
            data = json.dumps({"id": name, "modelId": name, "sha": repo.commit, "private": False,
                               "siblings": siblings}).encode()
            return self._send(h, 200, {"Content-Type": "application/json"}, data, body)
        if len(parts) >= 5 and parts[2] == "resolve":
            name, repo = self._repo(parts)
            if repo is None:
                return self._error(h, 404, "RepoNotFound", body)
            revision, filename = parts[3], "/".join(parts[4:])
            if revision == "main":  # the Hub resolves a branch by redirecting to the commit
                location = f"/{name}/resolve/{repo.commit}/{filename}"
                return self._send(h, 307, {"Location": location, "X-Repo-Commit": repo.commit}, b"", body)
            files = repo.files()
            if revision != repo.commit:
                return self._error(h, 404, "RevisionNotFound", body)
            if filename not in files:
                return self._error(h, 404, "EntryNotFound", body)
            data = files[filename]
            sib = repo.sibling(filename, data)
            etag = sib["lfs"]["sha256"] if "lfs" in sib else sib["blobId"]
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
            if "lfs" in sib:
                headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
            if filename in repo.corrupt:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            status = 200
            ranged = h.headers.get("Range", "")
            if body and ranged.startswith("bytes="):
                start = int(ranged[len("bytes="):].split("-")[0] or 0)
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                data, status = data[start:], 206
            return self._send(h, status, headers, data, body)
        return self._error(h, 404, "NotFound", body)
