"""Model download from a local hub cache (offline): what arrives, what never does, and errors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from huggingface_hub import constants as hf_constants
from huggingface_hub import errors as hf_errors

from forbidden_facts import hub
from forbidden_facts.hub import ALLOW_PATTERNS, ModelDownloadError, download_model, is_allowed

REPO_ID = "tiny-org/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_secret123"


@pytest.fixture(autouse=True)
def offline(monkeypatch, no_network):
    """Offline hub, and no socket may connect: these tests never touch the network."""
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; is_offline_mode() returns the constant.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


def _add_to_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Lay `files` out as the hub cache does: blobs by hash, snapshot symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    # The hub writes the ref without a trailing newline, and reads it back verbatim.
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture(scope="module")
def tiny_model_files(tmp_path_factory) -> dict[str, bytes]:
    """A tiny random LlamaForCausalLM as saved with safetensors, plus files we must not take."""
    from tests.conftest import tiny_llama

    model = tiny_llama(
        1,
        vocab_size=64,
        scale=1.0,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out, safe_serialization=True)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert "model.safetensors" in files and "config.json" in files
    files["pytorch_model.bin"] = b"pickled weights we must never load"
    files["README.md"] = b"# tiny llama\n"
    return files


@pytest.fixture
def cache(tmp_path, tiny_model_files) -> Path:
    cache = tmp_path / "hf_cache"
    _add_to_cache(cache, REPO_ID, tiny_model_files)
    return cache


def test_allow_patterns_take_safetensors_and_configs_only():
    for name in [
        "model.safetensors",
        "model-00001-of-00002.safetensors",
        "config.json",
        "model.safetensors.index.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.model",
    ]:
        assert is_allowed(name), name
    for name in [
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "consolidated.00.pth",
        "model.pt",
        "README.md",
        "params.json",
        "original/consolidated.00.pth",
    ]:
        assert not is_allowed(name), name
    assert not any(p.endswith((".bin", ".pth", ".pt")) for p in ALLOW_PATTERNS)


def test_download_from_offline_cache(tmp_path, cache, tiny_model_files, capsys, caplog):
    from transformers import AutoModelForCausalLM

    caplog.set_level(logging.DEBUG)
    local_dir = tmp_path / "resources" / "models" / "tiny"
    record = download_model(REPO_ID, "main", local_dir, token=TOKEN, cache_dir=cache)

    names = sorted(p.name for p in local_dir.iterdir())
    assert names == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "provenance.json",
    ]
    assert not list(local_dir.rglob("*.bin"))

    prov = json.loads((local_dir / "provenance.json").read_text())
    assert prov == json.loads(json.dumps(record))
    assert prov["repo_id"] == REPO_ID
    assert prov["revision_requested"] == "main"
    assert prov["revision"] == COMMIT
    assert prov["downloaded_at"]
    assert prov["files"]["model.safetensors"] == {
        "sha256": hashlib.sha256(tiny_model_files["model.safetensors"]).hexdigest(),
        "bytes": len(tiny_model_files["model.safetensors"]),
    }
    # Files are real files (not links into the cache that a cache clean-up would break).
    assert not any(p.is_symlink() for p in local_dir.iterdir())

    model = AutoModelForCausalLM.from_pretrained(local_dir)
    assert model.config.num_hidden_layers == 1 and model.config.vocab_size == 64

    # The token reaches no file, no output and no log record.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    out, err = capsys.readouterr()
    assert TOKEN not in out and TOKEN not in err
    assert TOKEN not in caplog.text
    assert all(TOKEN not in str(r.args) for r in caplog.records)
    # No temporary directory is left beside the model.
    assert sorted(p.name for p in local_dir.parent.iterdir()) == ["tiny"]


def test_download_replaces_an_existing_dir(tmp_path, cache):
    local_dir = tmp_path / "models" / "tiny"
    local_dir.mkdir(parents=True)
    (local_dir / "stale.safetensors").write_bytes(b"old")
    download_model(REPO_ID, "main", local_dir, cache_dir=cache)
    assert not (local_dir / "stale.safetensors").exists()
    assert (local_dir / "model.safetensors").exists()
    assert sorted(p.name for p in local_dir.parent.iterdir()) == ["tiny"]


def test_download_by_commit_hash(tmp_path, cache):
    record = download_model(REPO_ID, COMMIT, tmp_path / "m", cache_dir=cache)
    assert record["revision"] == COMMIT and record["revision_requested"] == COMMIT


def test_token_defaults_to_env_and_is_passed_only_to_the_hub(tmp_path, cache, monkeypatch):
    seen = {}
    real = huggingface_hub.snapshot_download

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    record = download_model(REPO_ID, "main", tmp_path / "m", cache_dir=cache)
    assert seen["token"] == TOKEN
    assert seen["allow_patterns"] == ALLOW_PATTERNS
    assert TOKEN not in json.dumps(record)


def test_repo_not_in_cache_while_offline(tmp_path, cache):
    local_dir = tmp_path / "models" / "absent"
    with pytest.raises(ModelDownloadError) as info:
        download_model("nobody/absent-model", "main", local_dir, token=TOKEN, cache_dir=cache)
    msg = str(info.value)
    assert "nobody/absent-model" in msg
    assert "HF_HUB_OFFLINE" in msg and "network" in msg and "huggingface-cli download" in msg
    assert TOKEN not in msg
    assert not local_dir.exists()


def _http_error(cls, status: int, message: str):
    url = f"https://huggingface.co/api/models/{REPO_ID}/revision/main"
    response = httpx2.Response(status, request=httpx2.Request("GET", url))
    return cls(message, response=response)


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            _http_error(
                hf_errors.GatedRepoError, 403, "403 Client Error. Cannot access gated repo"
            ),
            ["request access", f"huggingface.co/{REPO_ID}", "HF_TOKEN"],
        ),
        (
            _http_error(
                hf_errors.RepositoryNotFoundError, 404, "404 Client Error. Repository Not Found"
            ),
            ["models.<name>.repo_id", "config/config.yaml"],
        ),
        (
            _http_error(
                hf_errors.RevisionNotFoundError, 404, "404 Client Error. Revision Not Found"
            ),
            ["no revision 'v9'", "models.<name>.revision"],
        ),
        (
            _http_error(hf_errors.HfHubHTTPError, 401, "401 Client Error. Unauthorized"),
            ["request access", "HF_TOKEN"],
        ),
        (
            httpx2.ConnectError("[Errno 101] Network is unreachable"),
            ["cannot reach huggingface.co", "HF_HUB_OFFLINE=1", "HF_HOME"],
        ),
        (
            hf_errors.LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder"),
            ["cannot reach huggingface.co", "huggingface-cli download"],
        ),
    ],
    ids=["gated", "missing-repo", "missing-revision", "http-401", "connect", "local-entry"],
)
def test_hub_errors_become_model_download_errors(tmp_path, monkeypatch, error, expected):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    local_dir = tmp_path / "models" / "m"
    with pytest.raises(ModelDownloadError) as info:
        download_model(REPO_ID, "v9", local_dir, token=TOKEN)
    msg = str(info.value)
    assert REPO_ID in msg
    for part in expected:
        assert part in msg
    assert TOKEN not in msg
    assert info.value.__cause__ is error
    assert not local_dir.exists()


def test_unknown_errors_propagate_unchanged(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fail)
    with pytest.raises(KeyError):
        download_model(REPO_ID, "main", tmp_path / "m")


def test_repo_without_safetensors_leaves_nothing(tmp_path, tiny_model_files):
    cache = tmp_path / "hf_cache"
    _add_to_cache(
        cache,
        "old-org/bin-only",
        {
            "config.json": tiny_model_files["config.json"],
            "pytorch_model.bin": b"pickle",
        },
    )
    local_dir = tmp_path / "models" / "bin-only"
    with pytest.raises(ModelDownloadError, match="old-org/bin-only.*no safetensors weights"):
        download_model("old-org/bin-only", "main", local_dir, cache_dir=cache)
    assert not local_dir.exists()
    assert list(local_dir.parent.iterdir()) == []


def test_crash_midway_leaves_no_partial_dir_and_keeps_the_old_one(tmp_path, cache, monkeypatch):
    calls = []
    real_sha256 = hub.sha256_file

    def flaky_sha256(path):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk went away")
        return real_sha256(path)

    monkeypatch.setattr(hub, "sha256_file", flaky_sha256)
    fresh = tmp_path / "models" / "fresh"
    with pytest.raises(OSError, match="disk went away"):
        download_model(REPO_ID, "main", fresh, cache_dir=cache)
    assert not fresh.exists()
    assert list(fresh.parent.iterdir()) == []

    calls.clear()
    existing = tmp_path / "models" / "existing"
    existing.mkdir()
    (existing / "model.safetensors").write_bytes(b"previous good download")
    with pytest.raises(OSError, match="disk went away"):
        download_model(REPO_ID, "main", existing, cache_dir=cache)
    assert (existing / "model.safetensors").read_bytes() == b"previous good download"
    assert sorted(p.name for p in existing.parent.iterdir()) == ["existing"]


def test_corrupt_cache_blob_is_reported(tmp_path, cache):
    blob = next(
        (cache / ("models--" + REPO_ID.replace("/", "--")) / "snapshots" / COMMIT).glob(
            "model.safetensors"
        )
    ).resolve()
    blob.write_bytes(b"bit rot")
    local_dir = tmp_path / "models" / "tiny"
    with pytest.raises(ModelDownloadError, match="model.safetensors is corrupt"):
        download_model(REPO_ID, "main", local_dir, cache_dir=cache)
    assert not local_dir.exists()
