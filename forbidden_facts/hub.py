"""Model download from the Hugging Face hub into ``resources/models/{model}/``.

Only safetensors weights, the json configs and the tokenizer are fetched
(``ALLOW_PATTERNS``); pickled ``*.bin``/``*.pth``/``*.pt`` weights never are. The
snapshot goes through the ordinary hub cache (so ``HF_HOME``/``HF_HUB_OFFLINE``
work as usual and a pre-filled cache is used without network), then its files
are hard-linked (or copied) into a temporary directory beside the destination
and renamed into place, so a crash never leaves a half-filled model directory.
``provenance.json`` records the repo, the commit it resolved to and each file's
sha256.

The access token is passed to the hub and nowhere else: it is never printed,
logged or written, and error messages are scrubbed of it.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import logging
import os
import re
import shutil
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors

from .io import replacing_dir, write_json
from .model_folder import RemoteCodeRefused, check_no_remote_code
from .provenance import sha256_file

log = logging.getLogger(__name__)

ALLOW_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
]
# Belt and braces: even if a pattern above is widened, pickles are never taken.
_NEVER = ["*.bin", "*.pth", "*.pt"]

_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelDownloadError(RuntimeError):
    """A model could not be downloaded; the message says what to do."""


def download_model(
    repo_id: str,
    revision: str,
    local_dir: str | os.PathLike,
    token: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict:
    """Download a model's safetensors weights, configs and tokenizer into `local_dir`.

    Args:
        repo_id: Hub repository, e.g. ``meta-llama/Llama-2-7b-chat-hf``.
        revision: Branch, tag or commit to fetch (``main`` resolves to a commit,
            which is recorded).
        local_dir: Destination, e.g. ``resources/models/llama2-7b-chat``. Replaced
            as a whole if it exists, and only once the download is complete.
        token: Hub access token for gated repos; defaults to the ``HF_TOKEN``
            environment variable (and then to a stored ``huggingface-cli login``).
        cache_dir: Hub cache to use (default: the hub's, i.e. ``HF_HUB_CACHE``
            or ``HF_HOME``).

    Returns:
        The provenance record also written to ``local_dir/provenance.json``:
        ``repo_id``, ``revision_requested``, ``revision`` (commit hash),
        ``files`` (name -> ``{"sha256", "bytes"}``) and ``downloaded_at``.

    Raises:
        ModelDownloadError: The repo is gated, missing, lacks the revision or
            safetensors weights, or the hub cannot be reached and the cache
            does not hold the snapshot.
    """
    if token is None:
        token = os.environ.get("HF_TOKEN") or None
    local_dir = Path(local_dir)
    log.info("fetching %s at revision %s", repo_id, revision)
    try:
        snapshot = Path(
            huggingface_hub.snapshot_download(
                repo_id,
                revision=revision,
                allow_patterns=ALLOW_PATTERNS,
                token=token,
                cache_dir=cache_dir,
            )
        )
    except Exception as err:  # translated below; unknown errors are re-raised as they are
        translated = _translate(err, repo_id, revision, token)
        if translated is None:
            raise
        raise translated from err

    commit = (
        snapshot.name
        if _COMMIT.fullmatch(snapshot.name)
        else _resolve_commit(repo_id, revision, token)
    )
    # Built in a hidden sibling that replaces `local_dir` only once complete.
    with replacing_dir(local_dir) as tmp:
        files = _materialise(snapshot, tmp, repo_id)
        names = set(files)
        if not any(n.endswith(".safetensors") for n in names) or "config.json" not in names:
            raise ModelDownloadError(
                f"{repo_id} (revision {revision}): the snapshot has "
                f"{'no files we use' if not names else ', '.join(sorted(names))}, but we need "
                "config.json and *.safetensors weights. Either this repo has no safetensors "
                "weights (we never load pickled *.bin weights; pick a repo or revision that "
                "ships safetensors, or convert the weights and point models.<name>.repo_id in "
                "config/config.yaml at the converted repo), or the cached snapshot is "
                "incomplete (run the download again with network access)."
            )
        try:
            check_no_remote_code(tmp, f"{repo_id} (revision {revision})")
        except RemoteCodeRefused as err:
            raise ModelDownloadError(
                f"{err} For a hub model: pick a repo of a family transformers implements, "
                "and point models.<name>.repo_id in config/config.yaml at it."
            ) from err
        record = {
            "repo_id": repo_id,
            "revision_requested": revision,
            "revision": commit,
            "files": files,
            "downloaded_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        write_json(tmp / "provenance.json", record)
    log.info("model %s at %s: %d files in %s", repo_id, commit, len(files), local_dir)
    return record


def is_allowed(name: str) -> bool:
    """Whether a repo file (posix path relative to the repo root) is one we fetch."""
    return any(fnmatch.fnmatch(name, p) for p in ALLOW_PATTERNS) and not any(
        fnmatch.fnmatch(name, p) for p in _NEVER
    )


def _materialise(snapshot: Path, dest: Path, repo_id: str) -> dict[str, dict]:
    """Link or copy the allowed files of `snapshot` into `dest`; return name -> digest."""
    files: dict[str, dict] = {}
    # An offline snapshot_download returns the cached folder as is, whatever
    # allow_patterns said, so the filter must be applied here as well.
    for src in sorted(p for p in snapshot.rglob("*") if p.is_file()):
        name = src.relative_to(snapshot).as_posix()
        if not is_allowed(name):
            continue
        blob = src.resolve()
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Hard links cost no disk for 100+ GB of weights; copy across devices.
            os.link(blob, target)
        except OSError:
            shutil.copyfile(blob, target)
        digest = sha256_file(target)
        # The hub names LFS blobs by their sha256: a mismatch is a corrupt cache.
        if _SHA256.fullmatch(blob.name) and blob.name != digest:
            raise ModelDownloadError(
                f"{repo_id}: cached file {name} is corrupt (sha256 {digest}, expected "
                f"{blob.name}). Delete {blob} from the Hugging Face cache and download again."
            )
        files[name] = {"sha256": digest, "bytes": target.stat().st_size}
    return files


def _resolve_commit(repo_id: str, revision: str, token: str | None) -> str | None:
    if _COMMIT.fullmatch(revision):
        return revision
    if _offline():
        return None
    try:
        return huggingface_hub.HfApi().model_info(repo_id, revision=revision, token=token).sha
    except Exception as err:  # provenance without a commit beats failing a finished download
        log.warning(
            "could not resolve %s@%s to a commit: %s", repo_id, revision, type(err).__name__
        )
        return None


def _offline() -> bool:
    is_offline = getattr(hf_constants, "is_offline_mode", None)
    return bool(is_offline() if callable(is_offline) else hf_constants.HF_HUB_OFFLINE)


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _error_class(name: str) -> tuple[type[BaseException], ...]:
    cls = getattr(hf_errors, name, None)
    return (cls,) if isinstance(cls, type) else ()


def _network_error_classes() -> tuple[type[BaseException], ...]:
    classes: list[type[BaseException]] = [ConnectionError, TimeoutError]
    classes += _error_class("LocalEntryNotFoundError") + _error_class("OfflineModeIsEnabled")
    # The hub's HTTP client: httpx2 in huggingface_hub 2.x, requests before.
    for module, attr in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
        ("requests", "Timeout"),
    ):
        try:
            cls = getattr(__import__(module), attr, None)
        except ImportError:
            continue
        if isinstance(cls, type):
            classes.append(cls)
    return tuple(classes)


def _translate(
    err: BaseException, repo_id: str, revision: str, token: str | None
) -> ModelDownloadError | None:
    """The hub's exception as a ModelDownloadError that says what to do, or None."""
    detail = f"{type(err).__name__}: {err}"
    if token:
        detail = detail.replace(token, "***")
    detail = " ".join(detail.split())
    gated = _error_class("GatedRepoError")
    missing = _error_class("RepositoryNotFoundError")
    no_revision = _error_class("RevisionNotFoundError")
    http = _error_class("HfHubHTTPError")
    access = (
        f"request access on https://huggingface.co/{repo_id} with your account, create a read "
        "token at https://huggingface.co/settings/tokens and `export HF_TOKEN=hf_...` (or run "
        "`huggingface-cli login`) before running the workflow"
    )
    if gated and isinstance(err, gated):
        return ModelDownloadError(
            f"{repo_id} is a gated repository and "
            f"{'the token given has no access to it' if token else 'no access token was found'}: "
            f"{access}. ({detail})"
        )
    if no_revision and isinstance(err, no_revision):
        return ModelDownloadError(
            f"{repo_id} has no revision {revision!r}: check models.<name>.revision in "
            f"config/config.yaml (a branch, tag or commit that exists on "
            f"https://huggingface.co/{repo_id}). ({detail})"
        )
    if missing and isinstance(err, missing):
        return ModelDownloadError(
            f"{repo_id} was not found on the hub: check models.<name>.repo_id in "
            f"config/config.yaml for a typo. If the repository is private or gated, "
            f"{access}. ({detail})"
        )
    if http and isinstance(err, http) and _status(err) in (401, 403):
        return ModelDownloadError(
            f"{repo_id}: the hub refused access (HTTP {_status(err)}): {access}. ({detail})"
        )
    if isinstance(err, _network_error_classes()):
        return ModelDownloadError(
            f"{repo_id} (revision {revision}) is not in the local Hugging Face cache and this "
            "machine cannot reach huggingface.co (no network, or HF_HUB_OFFLINE=1 is set). "
            "Download it on a machine with network (`huggingface-cli download "
            f"{repo_id} --revision {revision} --include '*.safetensors' '*.json' "
            "'tokenizer.model'`), copy that machine's Hugging Face cache (~/.cache/huggingface/hub, "
            "or $HF_HOME/hub) over, point HF_HOME at it and set HF_HUB_OFFLINE=1, then run the "
            f"workflow again. ({detail})"
        )
    if http and isinstance(err, http):
        return ModelDownloadError(
            f"{repo_id} (revision {revision}): the hub answered with an error; try again later "
            f"or check https://status.huggingface.co. ({detail})"
        )
    return None
