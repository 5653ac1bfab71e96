"""Fetch a pinned checkpoint from the Hugging Face Hub into avstream's cache, every file checked.

Layout under the models folder::

    checkpoints/NAME@REVISION/            complete and verified: files + avstream-checkpoint.json
    checkpoints/.NAME@REVISION.partial/   being downloaded; huggingface_hub resumes its .incomplete files

The partial folder becomes the complete one by a single rename after every file has matched its
hash, so a folder without the ``.partial`` suffix is always whole. A file whose hash does not match
is deleted with the partial folder: nothing of that download is kept.

``huggingface_hub`` is imported here only, inside the functions, so the runtime never loads it; it
honours ``HF_ENDPOINT`` (a mirror, or the tests' local server), ``HF_TOKEN`` and ``HF_HUB_OFFLINE``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avstream.engine.errors import MissingDependencyError, ModelError
from avstream.exporters.pretrained.registry import (
    COMMIT,
    FOLDER_FILES,
    OPEN_CLIP_CONFIG,
    OPEN_CLIP_WEIGHT_FILES,
    WEIGHT_FILES,
    Checkpoint,
)

MANIFEST = "avstream-checkpoint.json"
CHUNK = 1 << 20


class HubUnreachable(ModelError):
    """The Hub could not be reached (offline, refused, timed out, offline mode, a 5xx answer)."""


@dataclass(frozen=True)
class Expected:
    """How one file is checked: sha256 (recorded or the Hub's LFS hash) or the Hub's git blob sha1."""

    algorithm: str  # "sha256" or "git-sha1"
    digest: str
    origin: str  # "recorded in the registry" / "reported by the Hub"


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise MissingDependencyError("pulling from the Hugging Face Hub needs huggingface_hub: "
                                     "pip install 'avstream[export]'") from None
    # the CLI logs at INFO; the Hub client's per-request lines would bury the progress we print
    for name in ("huggingface_hub", "httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return huggingface_hub


def endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _transports() -> list[Any]:
    """The HTTP libraries installed, whichever of them this huggingface_hub uses (literal imports only)."""
    found: list[Any] = []
    try:
        import httpx2  # type: ignore[import-not-found,unused-ignore]  # huggingface_hub >= 2

        found.append(httpx2)
    except ImportError:
        pass
    try:
        import httpx  # type: ignore[import-not-found,unused-ignore]

        found.append(httpx)
    except ImportError:
        pass
    try:
        import requests  # type: ignore[import-untyped,unused-ignore]

        found.append(requests)
    except ImportError:
        pass
    return found


def _network_errors(hub_errors: Any) -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [hub_errors.OfflineModeIsEnabled, ConnectionError, TimeoutError]
    for mod in _transports():
        base = getattr(mod, "TransportError", None) or getattr(getattr(mod, "exceptions", None),
                                                                "ConnectionError", None)
        if isinstance(base, type) and issubclass(base, BaseException):
            errors.append(base)
    return tuple(errors)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def hub_errors(what: str, call: Callable[[], Any]) -> Any:
    """Run one Hub call, turning its failures into avstream errors that name ``what``."""
    _hub()
    from huggingface_hub import errors

    try:
        return call()
    except errors.GatedRepoError:
        raise ModelError(f"{what}: the repository is gated: accept its terms on the Hub and set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise ModelError(f"{what}: no such repository on {endpoint()} (or it is private: set HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise ModelError(f"{what}: no such revision on {endpoint()}") from None
    except errors.RemoteEntryNotFoundError:
        raise ModelError(f"{what}: no such file at that revision on {endpoint()}") from None
    except errors.HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(status, int) and status >= 500:
            raise HubUnreachable(f"{endpoint()} answered HTTP {status}") from None
        raise ModelError(f"{what}: the Hub refused: {_first_line(exc)}") from None
    except _network_errors(errors) as exc:
        raise HubUnreachable(f"{endpoint()}: {_first_line(exc)}") from None


@dataclass(frozen=True)
class Resolved:
    checkpoint: Checkpoint
    commit: str
    expected: dict[str, Expected]  # file name -> how it is checked
    sizes: dict[str, int | None]


def _pick_files(siblings: Mapping[str, Any], repo: str) -> list[str]:
    """For a repository without a file list: its config, tokenizer and preprocessing, one weights file;
    or, for an open_clip repository without a transformers config, its open_clip config and weights."""
    if "config.json" in siblings:
        config, weight_files = [f for f in FOLDER_FILES if f in siblings], WEIGHT_FILES
    elif OPEN_CLIP_CONFIG in siblings:
        config, weight_files = [OPEN_CLIP_CONFIG], OPEN_CLIP_WEIGHT_FILES
    else:
        raise ModelError(f"{repo}: neither config.json nor {OPEN_CLIP_CONFIG} at this revision (not a transformers "
                         "or open_clip model folder)")
    weights = next((w for w in weight_files if w in siblings), None)
    if weights is None:
        raise ModelError(f"{repo}: neither {' nor '.join(weight_files)} at this revision "
                         f"(sharded or non-PyTorch weights are not supported)")
    return config + [weights]


def resolve(checkpoint: Checkpoint, say: Callable[[str], None]) -> Resolved:
    """The commit and, per file, the hash to check: the recorded sha256, else the Hub's metadata."""
    hub = _hub()
    revision = checkpoint.revision or "main"
    what = f"{checkpoint.repo}@{revision}"
    info = hub_errors(what, lambda: hub.HfApi().model_info(checkpoint.repo, revision=revision, files_metadata=True))
    commit = str(info.sha or "")
    if not COMMIT.fullmatch(commit):
        raise ModelError(f"{what}: the Hub did not report a commit sha for this revision")
    if checkpoint.revision is None:
        say(f"resolved {checkpoint.repo} main to {commit} (pin it: hf://{checkpoint.repo}@{commit})")
    elif commit != checkpoint.revision:
        raise ModelError(f"{what}: the Hub resolved the pinned revision to another commit ({commit})")
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    names = list(checkpoint.files) or _pick_files(siblings, checkpoint.repo)
    expected: dict[str, Expected] = {}
    sizes: dict[str, int | None] = {}
    for name in names:
        sib = siblings.get(name)
        if sib is None:
            raise ModelError(f"{checkpoint.repo}@{commit}: {name} is not in the repository at this revision")
        lfs_sha = getattr(sib.lfs, "sha256", None) if sib.lfs is not None else None
        recorded = checkpoint.files.get(name)
        if recorded and lfs_sha and recorded != lfs_sha:
            raise ModelError(f"{checkpoint.repo}@{commit}: {name}: the sha256 recorded in {checkpoint.source} "
                             f"({recorded}) differs from the Hub's ({lfs_sha}); not downloading")
        if recorded:
            expected[name] = Expected("sha256", recorded, f"recorded in {checkpoint.source}")
        elif lfs_sha:
            expected[name] = Expected("sha256", str(lfs_sha), "reported by the Hub")
        elif sib.blob_id:
            expected[name] = Expected("git-sha1", str(sib.blob_id), "reported by the Hub (git blob id)")
        else:
            raise ModelError(f"{checkpoint.repo}@{commit}: {name}: the Hub reports no hash for it and none "
                             f"is recorded: it cannot be checked")
        sizes[name] = sib.size
    return Resolved(checkpoint, commit, expected, sizes)


def digest(path: Path, algorithm: str) -> str:
    """sha256 of the file, or its git blob sha1 (``sha1("blob SIZE\\0" + content)``)."""
    h = hashlib.sha256() if algorithm == "sha256" else hashlib.sha1(usedforsecurity=False)
    if algorithm == "git-sha1":
        h.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def checkpoint_dir(root: Path, name: str, commit: str) -> Path:
    return root / "checkpoints" / f"{name}@{commit}"


def cached_checkpoint(root: Path, name: str, commit: str) -> Path | None:
    """The complete folder of an earlier pull, if there is one (its manifest is written last)."""
    folder = checkpoint_dir(root, name, commit)
    return folder if (folder / MANIFEST).is_file() else None


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def download(resolved: Resolved, root: Path, say: Callable[[str], None], *, force: bool = False) -> Path:
    """Every file of ``resolved`` into ``checkpoints/NAME@COMMIT``, checked; the folder's path."""
    hub = _hub()
    ck = resolved.checkpoint
    final = checkpoint_dir(root, ck.name, resolved.commit)
    partial = final.with_name(f".{final.name}.partial")
    if force:
        shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True, exist_ok=True)
    checked: dict[str, dict[str, str]] = {}
    for name, want in resolved.expected.items():
        say(f"  {name} ({_size(resolved.sizes.get(name))}) ...")
        def fetch(name: str = name) -> Any:
            return hub.hf_hub_download(ck.repo, name, revision=resolved.commit, local_dir=partial,
                                       force_download=force)

        path = Path(hub_errors(f"{ck.repo}@{resolved.commit}: {name}", fetch))
        got = digest(path, want.algorithm)
        if got != want.digest:
            shutil.rmtree(partial, ignore_errors=True)  # the bad file and the rest of this download
            raise ModelError(f"{ck.repo}@{resolved.commit}: {name}: {want.algorithm} {got} does not match "
                             f"{want.digest} ({want.origin}); the file was deleted, nothing was kept")
        checked[name] = {want.algorithm: got, "checked_against": want.origin}
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # huggingface_hub's resume bookkeeping
    manifest = {"repo": ck.repo, "revision": resolved.commit, "name": ck.name, "endpoint": endpoint(),
                "files": checked}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    partial.replace(final)
    return final
