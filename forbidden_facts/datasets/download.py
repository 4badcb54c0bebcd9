"""The dataset download: pooch into a hidden folder, checked, then moved into place."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import artifacts
from ..provenance import sha256_file
from .facts import DatasetError

log = logging.getLogger("forbidden_facts.datasets")


def download_dataset(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    timeout: float = 60,
    *,
    name: str = "counterfact",
    retries: int = 3,
    progressbar: bool = True,
) -> dict:
    """Download a dataset file to `dest` with pooch, checking its sha256.

    pooch streams the body into a temporary file beside `dest`, checks the
    checksum, and only then moves it into place; it retries a failed download
    (network error or checksum mismatch) `retries` times. A failed download
    therefore never leaves a partial or wrong `dest`, and an earlier `dest` stays
    as it was. ``file://`` URLs are copied through the same path (pooch itself
    knows only http, ftp and doi).

    Args:
        url: ``http(s)://``, ``ftp://`` or ``file://`` URL.
        dest: Where to write the file.
        sha256: Expected hex sha256, or None to accept any content.
        timeout: Seconds to wait for the server.
        name: The dataset's name in config/config.yaml, for messages.
        retries: Extra attempts after a failed one.
        progressbar: Show a tqdm progress bar on stderr.

    Returns:
        ``{"url": url, "sha256": <hex of what arrived>, "bytes": <size>}``.

    Raises:
        DatasetError: The URL cannot be reached, or the checksum differs.
    """
    import pooch
    import requests

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = sha256.strip().lower() if sha256 else None
    if urllib.parse.urlsplit(url).scheme == "file":
        downloader: Callable[..., Any] = _copy_file_url
    else:
        downloader = pooch.HTTPDownloader(progressbar=progressbar, timeout=timeout)
    # A fresh hidden folder, so pooch never "reuses" an earlier file, and the
    # previous `dest` stays until the new file is complete and verified.
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.", dir=dest.parent) as folder:
        # A pooch of one file: its registry pins the checksum, `urls` names the source.
        fetcher = pooch.create(
            path=folder,
            base_url="",
            registry={dest.name: f"sha256:{expected}" if expected else None},
            urls={dest.name: url},
            retry_if_failed=retries,
        )
        try:
            fetched = Path(fetcher.fetch(dest.name, downloader=downloader))
        except ValueError as err:  # pooch's checksum mismatch names the hash it got
            got = re.search(r"got ([0-9a-fA-F]{64})", str(err))
            raise _mismatch(url, dest, name, expected, got.group(1) if got else "?") from err
        except (OSError, requests.RequestException) as err:
            raise _unreachable(url, dest, name, err) from err
        got = sha256_file(fetched)
        size = fetched.stat().st_size
        os.replace(fetched, dest)
    log.info("downloaded %s to %s (%d bytes, sha256 %s)", url, dest, size, got)
    return {
        artifacts.Download.url: url,
        artifacts.Download.sha256: got,
        artifacts.Download.bytes: size,
    }


def _copy_file_url(url: str, output_file: str, pooch: Any) -> None:
    """A pooch downloader for ``file://`` URLs: copy the local file."""
    source = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
    shutil.copyfile(source, output_file)


def _mismatch(url: str, dest: Path, name: str, expected: str | None, got: str) -> DatasetError:
    return DatasetError(
        f"{url}: sha256 mismatch for the download to {dest}: expected {expected}, got "
        f"{got}. The file changed upstream or the download is corrupt. "
        f"If you trust the new file, update datasets.{name}.sha256 in "
        f"config/config.yaml to {got} (or delete the key to skip the check)."
    )


def _unreachable(url: str, dest: Path, name: str, err: BaseException) -> DatasetError:
    reason = getattr(err, "reason", None) or err
    return DatasetError(
        f"The URL {url} could not be reached ({type(err).__name__}: {reason}). This machine may "
        f"have no network access, or the server may be down. Download the file by hand on a "
        f"machine with network (e.g. `curl -L -o {dest.name} {url}`), copy it here, and set "
        f"datasets.{name}.path in config/config.yaml to the local file (instead of "
        f"datasets.{name}.url)."
    )
