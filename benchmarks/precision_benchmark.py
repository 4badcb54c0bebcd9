"""Benchmark: what float16 and bfloat16 change against float32, on the same weights.

Runs inference (`inference.run_inference`) and first-order attribution
(`patching.attribute`) on the same prompts with the same weights cast to each
dtype, and compares with float32: the largest |Δ| of p_correct and of the log-odds,
the largest |Δ| of the patching deltas (log10), and the agreement of the component
ranking (mean nc->c log BF over both pairs): Spearman's rank correlation and the
overlap of the top 35 (the paper's N* for Llama-2-7b). Either a model directory
with real weights, or a random-weight shape from scale_benchmark.py:

    python benchmarks/precision_benchmark.py --model resources/models/smollm2-135m-instruct \\
        --prompt-style chat_prefill --facts 16
    python benchmarks/precision_benchmark.py --preset llama2-7b --layers 2 --facts 4

A dtype whose kernels are missing on the device is reported with the error, not
skipped silently. Needs torch, transformers, pandas and the package only.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale_benchmark import (  # noqa: E402
    llama_config,
    padded_tokenizer,
    random_model,
    write_figures,
)

from forbidden_facts.datasets import load_facts  # noqa: E402
from forbidden_facts.inference import run_inference  # noqa: E402
from forbidden_facts.metrics import VocabIndex  # noqa: E402
from forbidden_facts.modeling import DTYPES, load_model  # noqa: E402
from forbidden_facts.patching import attribute  # noqa: E402
from forbidden_facts.prompts import (  # noqa: E402
    adds_special_tokens,
    assign_irrelevant_words,
    build_prompts,
    prompt_formatter,
    single_token_answers,
)
from forbidden_facts.units import LN10  # noqa: E402

TOP_K = 35


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rank correlation of two series on the same index (average ranks for ties)."""
    a, b = a.align(b, join="inner")
    return float(np.corrcoef(a.rank().to_numpy(), b.rank().to_numpy())[0, 1])


def ranking(attribution: pd.DataFrame) -> pd.Series:
    """Mean nc->c delta (natural log) per component over every (fact, pair)."""
    nc_to_c = attribution[attribution["direction"] == "nc_to_c"]
    return nc_to_c.groupby("component")["delta_logodds"].mean()


def run(model, tokenizer, prompts, vocab, args) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    start = time.perf_counter()
    inference = run_inference(
        model, tokenizer, prompts, batch_size=3 * args.batch_size, vocab=vocab, progress=False
    )
    frames = attribute(
        model, tokenizer, prompts, batch_size=args.batch_size, vocab=vocab, progress=False
    )
    return inference, pd.concat(list(frames), ignore_index=True), time.perf_counter() - start


def compare(ref, other) -> dict:
    """The figures of the precision table, `other` against the float32 reference `ref`."""
    (inf_a, att_a, _), (inf_b, att_b, _) = ref, other
    keys = ["fact_id", "kind"]
    inf = inf_a.merge(inf_b, on=keys, suffixes=("_a", "_b"))
    att_keys = ["fact_id", "pair", "direction", "component"]
    att = att_a.merge(att_b, on=att_keys, suffixes=("_a", "_b"))
    rank_a, rank_b = ranking(att_a), ranking(att_b)
    top_a = set(rank_a.nsmallest(TOP_K).index)
    top_b = set(rank_b.nsmallest(TOP_K).index)
    delta = (att["delta_logodds_a"] - att["delta_logodds_b"]).abs() / LN10
    return {
        "max_abs_delta_p_correct": float((inf["p_correct_a"] - inf["p_correct_b"]).abs().max()),
        "max_abs_delta_logodds_log10": float(
            (inf["logodds_a"] - inf["logodds_b"]).abs().max() / LN10
        ),
        "max_abs_delta_patching_log10": float(delta.max()),
        "median_abs_delta_patching_log10": float(delta.median()),
        "largest_patching_effect_log10": float(att["delta_logodds_a"].abs().max() / LN10),
        "spearman_ranking": spearman(rank_a, rank_b),
        "top35_overlap": len(top_a & top_b) / min(TOP_K, len(rank_a)),
        "top1_same": rank_a.idxmin() == rank_b.idxmin(),
        "p_correct_range": [float(inf["p_correct_a"].min()), float(inf["p_correct_a"].max())],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="model directory with real weights")
    src.add_argument("--preset", help="random-weight shape (see scale_benchmark.py)")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--prompt-style", default="llama2", help="llama2, chat, chat_prefill")
    ap.add_argument("--dtypes", default="float16,bfloat16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--facts", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4, help="facts per attribution pass")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    facts = load_facts(ROOT / "data/facts/curated.csv")
    words = (ROOT / "data/irrelevant_words.txt").read_text().split()
    if args.model:
        model, tokenizer = load_model(
            args.model, dtype="float32", device=args.device, attn_implementation="sdpa"
        )
        name = args.model.name
    else:
        cfg = llama_config(args.preset, args.layers)
        tokenizer = padded_tokenizer(facts, words, cfg.vocab_size)
        model = random_model(cfg, torch.float32, args.device, args.seed)
        name = f"{args.preset} ({cfg.num_hidden_layers} layers, random weights)"
    style = args.prompt_style
    kept, _ = single_token_answers(facts, tokenizer, style)
    kept = kept.iloc[: args.facts].reset_index(drop=True)
    formatter = prompt_formatter(style, tokenizer)
    prompts = build_prompts(
        kept, assign_irrelevant_words(kept, words), formatter, adds_special_tokens(style)
    )
    vocab = VocabIndex(tokenizer)
    print(f"{name}: {len(kept)} facts, {len(prompts)} prompts, device {args.device}", flush=True)
    ref = run(model, tokenizer, prompts, vocab, args)
    print(f"float32: {ref[2]:.1f} s", flush=True)
    out = {"model": name, "facts": len(kept), "device": args.device, "dtypes": {}}
    for dt in [d for d in args.dtypes.split(",") if d]:
        try:
            half = copy.deepcopy(model).to(DTYPES[dt])
            result = run(half, tokenizer, prompts, vocab, args)
        except (RuntimeError, NotImplementedError) as err:
            # e.g. an op without a kernel for this dtype on this device
            out["dtypes"][dt] = {"error": f"{type(err).__name__}: {err}"}
            print(f"{dt}: failed: {err}", flush=True)
            continue
        finally:
            half = None
        row = compare(ref, result)
        row["seconds"] = result[2]
        out["dtypes"][dt] = row
        print(f"{dt}: " + json.dumps(row), flush=True)
    write_figures(args.json, out)
    return out


if __name__ == "__main__":
    main()
