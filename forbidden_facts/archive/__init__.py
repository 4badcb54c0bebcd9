"""Archive a paper revision: every figure, table and artifact, checksummed, in one .tar.gz.

The archive unpacks to ``forbidden-facts-<tag>/`` holding the files at their
paths relative to the working directory, a ``MANIFEST.tsv`` (path, sha256,
bytes) and a ``provenance.json`` (git commit, config, package versions, the
models, datasets and code versions the artifacts record, and the host).
``forbidden-facts verify <dir or .tar.gz>`` checks an archive against its
manifest, which lists every file (provenance.json included); the manifest's own
sha256, printed by the archive rule and kept beside the tarball as
``<archive>.manifest.sha256``, is what detects a consistent rewrite of files and manifest
(``verify --sha256 HEX``, or the sidecar found beside a .tar.gz), and
``<archive>.sha256`` holds the tarball's own sha256 (``sha256sum -c``); an archive holds only regular files and folders, so a link (symbolic
or hard) or a path that leaves the archive fails verification.
"""

from __future__ import annotations

from .build import (  # noqa: F401
    MANIFEST,
    MANIFEST_HEADER,
    PACKAGES,
    PROVENANCE,
    _add_bytes,
    _plain,
    _relative,
    artifact_provenance,
    build_archive,
    build_archive_with_sidecar,
    collect_files,
    host_info,
    manifest_sha256,
    manifest_text,
    package_versions,
    provenance_record,
    read_member,
    sidecar_text,
    tarball_sidecar_text,
)
from .verify import (  # noqa: F401
    _find_root,
    _link_problems,
    check_members,
    read_sidecar,
    read_sidecars,
    verify,
    verify_archive,
    verify_manifest,
)
