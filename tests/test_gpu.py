"""CUDA checks (marked `gpu`, skipped without a CUDA device): devices, dtypes, memory.

Run on a GPU machine with ``python -m pytest -m gpu tests/test_gpu.py`` (or through
``benchmarks/gpu_check.sh``). They check what a CPU run cannot: that every tensor the
patching makes lands on the model's device, that float16 and bfloat16 pass the
decomposition check at their tolerance on CUDA kernels, that CUDA agrees with the CPU
in float32, and that the attribution peak stays within the stated memory formula.
"""

from __future__ import annotations

import pytest
import torch

from forbidden_facts.decompose import RESID_RTOL, check_decomposition, decompose
from forbidden_facts.memory import attribution_peak_bytes
from forbidden_facts.metrics import VocabIndex
from forbidden_facts.modeling import encode
from forbidden_facts.patching import attribute, wide_prompts

from .conftest import tiny_llama

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _attribution(model, tokenizer, prompts):
    frames = attribute(model, tokenizer, prompts, batch_size=2, vocab=VocabIndex(tokenizer))
    import pandas as pd

    return pd.concat(list(frames), ignore_index=True)


def test_attribution_on_cuda_equals_the_cpu_in_float32(tokenizer, prompts):
    cpu = tiny_llama(2, seed=1, vocab_size=len(tokenizer))
    gpu = tiny_llama(2, seed=1, vocab_size=len(tokenizer), device="cuda")
    a = _attribution(cpu, tokenizer, prompts)
    b = _attribution(gpu, tokenizer, prompts)
    assert (a[["fact_id", "component"]] == b[["fact_id", "component"]]).all().all()
    assert (a["delta_logodds"] - b["delta_logodds"]).abs().max() < 1e-3


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_passes_the_decomposition_check_on_cuda(tokenizer, prompts, dtype):
    model = tiny_llama(2, seed=1, vocab_size=len(tokenizer), device="cuda").to(dtype)
    texts = list(wide_prompts(prompts)["prompt_c"])
    dec = decompose(model, encode(tokenizer, texts), check=False)
    assert dec.components.device.type == "cuda" and dec.components.dtype == torch.float32
    check_decomposition(model, dec)  # raises above RESID_RTOL[dtype]
    err = (dec.components.sum(1) - dec.resid).norm(dim=-1) / dec.resid.norm(dim=-1)
    assert float(err.max()) < RESID_RTOL[dtype]
    table = _attribution(model, tokenizer, prompts)
    assert table["delta_logodds"].notna().all()


def test_attribution_peak_memory_follows_the_formula(tokenizer, prompts):
    model = tiny_llama(2, seed=1, vocab_size=len(tokenizer), device="cuda")
    torch.cuda.synchronize()
    start = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    _attribution(model, tokenizer, prompts)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - start
    cfg = model.config
    tokens = max(len(tokenizer(p)["input_ids"]) for p in prompts["prompt"])
    bound = attribution_peak_bytes(
        batch=2,
        components=1 + cfg.num_hidden_layers * (cfg.num_attention_heads + 1),
        d_model=cfg.hidden_size,
        d_vocab=cfg.vocab_size,
        row_batch=4096,
        tokens=tokens,
        d_mlp=cfg.intermediate_size,
        n_heads=cfg.num_attention_heads,
        dtype_bytes=4,
        sliced=False,  # CUDA: whole-vocabulary chunks
    )["total"]
    # A tiny model: the CUDA caching allocator's 512-byte rounding and small blocks
    # dominate, so only the order of magnitude is checked here; the scale benchmark
    # compares the formula with real shapes.
    assert extra < 20 * bound + 2**20
