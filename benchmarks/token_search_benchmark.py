"""Benchmark: the token search (token_search.token_search) against the whole-prompt reference.

Runs the reference (tests/reference_search.py: every candidate's whole prompt, eager
attention with every layer's weights returned, no cache; the search as it was up to
commit e87b285) and the search of forbidden_facts.attack (the prefix before the slot
run once per fact and its cache shared by every batch, SDPA, the heads' attention
from their own queries and keys) on the same facts, tokens and heads, alternating
old and new in each repeat so that both see the same load. Prints seconds per
(fact x token) (attack and control pass together) for each, their ratio per repeat
and the median, the peak memory of each (CPU: the resident-set high-water mark, reset
before each implementation's first run on a trimmed heap; CUDA: torch's peak
allocation) and their agreement: max |delta| of the attention columns and of the
delta log-odds columns, whether the top-10 tokens per head and fact are the same and
whether every other column is equal.

    python benchmarks/token_search_benchmark.py --model resources/models/smollm2-135m-instruct \\
        --prompt-style chat_prefill --facts 2 --tokens 32
    python benchmarks/token_search_benchmark.py --preset llama2-7b --layers 2 --facts 1 --tokens 16
    python benchmarks/token_search_benchmark.py --preset llama2-7b --device cuda --dtype float16 \\
        --facts 2 --tokens 512 --batch-size 128 --json search_7b.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
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
    PeakMemory,
    llama_config,
    padded_tokenizer,
    random_model,
    write_figures,
)

from forbidden_facts.architectures import adapter_for  # noqa: E402
from forbidden_facts.artifacts import TOKEN_SEARCH_COLUMNS  # noqa: E402
from forbidden_facts.datasets import load_facts  # noqa: E402
from forbidden_facts.metrics import VocabIndex  # noqa: E402
from forbidden_facts.modeling import DTYPES, common_start, load_model  # noqa: E402
from forbidden_facts.prompts import (  # noqa: E402
    adds_special_tokens,
    assign_irrelevant_words,
    build_prompts,
    prompt_formatter,
    single_token_answers,
)
from forbidden_facts.token_search import (  # noqa: E402
    control_slot_ids,
    slot_ids,
    token_search,
)
from tests.reference_search import reference_token_search  # noqa: E402

ATTENTION = ("attention", "control_attention")
DELTAS = ("delta_logodds_log10", "delta_vs_no_insertion_log10", "control_delta_logodds_log10")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def spread_heads(n_layers: int, n_heads: int, k: int) -> list[tuple[str, int, int]]:
    """`k` heads over the depth (the last layer, then evenly below it), one head index each."""
    layers = np.linspace(n_layers - 1, 0, k).round().astype(int)
    return [
        (f"L{layer}H{i % n_heads}ATN", int(layer), i % n_heads) for i, layer in enumerate(layers)
    ]


def positions_run(prompts: list[tuple[list[int], int]]) -> int:
    """Positions one candidate runs in token_search.token_search over `prompts` (ids, slot)."""
    groups: dict[tuple[int, ...], list[list[int]]] = {}
    for ids, slot in prompts:
        groups.setdefault(tuple(ids[:slot]), []).append(ids[slot:])
    total = 0
    for rests in groups.values():
        shared = common_start(rests)[: min(map(len, rests)) - 1] if len(rests) > 1 else []
        total += 1 + len(shared) + sum(len(r) - len(shared) for r in rests)
    return total


def agreement(new: pd.DataFrame, ref: pd.DataFrame) -> dict:
    """How far the two tables are apart: the figures the issue asks for."""

    def top10(table):
        low = table[table["rank"] < 10]
        return {key: set(g["token_id"]) for key, g in low.groupby(["component", "fact_id"])}

    others = [c for c in TOKEN_SEARCH_COLUMNS if c not in ATTENTION + DELTAS + ("rank",)]
    return {
        "rows_equal": len(new) == len(ref),
        "max_abs_attention": float(max((new[c] - ref[c]).abs().max() for c in ATTENTION)),
        "max_abs_delta_logodds_log10": float(max((new[c] - ref[c]).abs().max() for c in DELTAS)),
        "top10_same": top10(new) == top10(ref),
        "rank_same": bool(new["rank"].equals(ref["rank"])),
        "other_columns_unequal": [c for c in others if not new[c].equals(ref[c])],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default=None, help="a model folder (real weights)")
    ap.add_argument(
        "--preset", default=None, help="instead: a random-weight shape (scale_benchmark)"
    )
    ap.add_argument("--layers", type=int, default=None, help="with --preset: blocks kept")
    ap.add_argument("--prompt-style", default="llama2", help="llama2, chat or chat_prefill")
    ap.add_argument("--facts", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=16, help="candidate tokens (seeded sample)")
    ap.add_argument("--heads", type=int, default=3, help="heads searched in one pass")
    ap.add_argument("--batch-size", type=int, default=256, help="candidates per forward pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    if (args.model is None) == (args.preset is None):
        ap.error("give exactly one of --model and --preset")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)

    facts = load_facts(ROOT / "data/facts/curated.csv")
    words = (ROOT / "data/irrelevant_words.txt").read_text().split()
    if args.preset:
        cfg = llama_config(args.preset, args.layers)
        tokenizer = padded_tokenizer(facts, words, cfg.vocab_size)
        model = random_model(cfg, DTYPES[args.dtype], args.device, seed=0)
        name = f"{args.preset}, {cfg.num_hidden_layers} layers, random weights"
    else:
        model, tokenizer = load_model(
            args.model, dtype=args.dtype, device=args.device, attn_implementation="eager"
        )
        name = f"{Path(args.model).name}, {model.config.num_hidden_layers} layers"
    style = args.prompt_style
    kept, _ = single_token_answers(facts, tokenizer, style)
    prompts = build_prompts(
        kept, assign_irrelevant_words(kept, words), prompt_formatter(style, tokenizer),
        adds_special_tokens(style),
    )  # fmt: skip
    nc1 = prompts[prompts["kind"] == "nc1"].iloc[: args.facts].reset_index(drop=True)
    specials = adds_special_tokens(style)
    attack = [slot_ids(tokenizer, p, specials) for p in nc1["prompt"]]
    control = [
        control_slot_ids(tokenizer, p, specials, w)
        for p, w in zip(nc1["prompt"], nc1["forbidden_word"], strict=True)
    ]
    ids, slot = attack[0]
    control_slot = control[0][1]
    # Positions each (fact x token) runs: the whole prompt twice (old); from each slot on,
    # the part after the attack slot that every fact shares counted once for all (new).
    tokens_old = sum(len(i) + 1 for i, _ in attack + control) / len(nc1)
    tokens_new = sum(positions_run(kind) for kind in (attack, control)) / len(nc1)
    adapter = adapter_for(model)
    heads = spread_heads(adapter.n_layers, adapter.n_heads, args.heads)
    vocab = VocabIndex(tokenizer)
    common = dict(batch_size=args.batch_size, vocab=vocab, n_tokens=args.tokens)
    n_items = len(nc1) * min(args.tokens, len(tokenizer))
    implementation = "sdpa" if adapter.sdpa else "eager"

    def old() -> pd.DataFrame:
        model.set_attn_implementation("eager")
        return reference_token_search(model, tokenizer, nc1, heads, **common)

    def new() -> pd.DataFrame:
        model.set_attn_implementation(implementation)
        return token_search(model, tokenizer, nc1, heads, progress=False, **common)

    runs = {"old": old, "new": new}
    tables, peaks = {}, {}
    seconds, cpu_seconds = {k: [] for k in runs}, {k: [] for k in runs}
    for key, fn in runs.items():  # the first run of each: its peak memory and its table
        with PeakMemory(args.device) as mem:
            tables[key] = fn()
        peaks[key] = {"peak_mb": mem.peak_mb, "extra_mb": mem.peak_mb - mem.start_mb}
    for r in range(args.repeats):
        for key in ("old", "new") if r % 2 == 0 else ("new", "old"):
            _sync(args.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            runs[key]()
            _sync(args.device)
            seconds[key].append((time.perf_counter() - start) / n_items)
            cpu_seconds[key].append((time.process_time() - cpu_start) / n_items)
    ratios = [o / n for o, n in zip(seconds["old"], seconds["new"], strict=True)]
    # The process's CPU time: on a shared machine the work done, whatever the wait for a core.
    cpu_ratios = [o / n for o, n in zip(cpu_seconds["old"], cpu_seconds["new"], strict=True)]
    agree = agreement(tables["new"], tables["old"])
    print(
        f"{name}, d_model {adapter.d_model}, d_vocab {adapter.d_vocab}, {args.dtype} on "
        f"{args.device}, torch threads {torch.get_num_threads()}; {len(nc1)} facts x "
        f"{min(args.tokens, len(tokenizer))} tokens, heads {[h[0] for h in heads]}, batch "
        f"{args.batch_size}; first nc1 prompt with ' from' {len(ids)} tokens, attack slot at "
        f"{slot}, control slot at {control_slot}; positions run per (fact x token): "
        f"{tokens_old:.1f} (old), {tokens_new:.1f} (new), ratio {tokens_old / tokens_new:.2f}"
    )
    for key in runs:
        print(
            f"{key:>4}: {statistics.median(seconds[key]):.4f} s per (fact x token) (median of "
            f"{args.repeats}: {', '.join(f'{s:.4f}' for s in seconds[key])}); peak "
            f"{peaks[key]['peak_mb']:.0f} MB (+{max(0.0, peaks[key]['extra_mb']):.0f} MB over "
            "the start)"
        )
    print(
        f"old / new: median {statistics.median(ratios):.2f}x "
        f"({', '.join(f'{x:.2f}' for x in ratios)}) (goal >= 3); in CPU time "
        f"{statistics.median(cpu_ratios):.2f}x ({', '.join(f'{x:.2f}' for x in cpu_ratios)})"
    )
    print(
        f"agreement: max |d attention| {agree['max_abs_attention']:.1e}, max |d delta log10 "
        f"odds| {agree['max_abs_delta_logodds_log10']:.1e} (goal < 1e-4 in float32); top-10 "
        f"per head and fact the same: {agree['top10_same']}; every rank the same: "
        f"{agree['rank_same']}; other columns unequal: {agree['other_columns_unequal'] or 'none'}"
    )
    out = {
        "model": name,
        "dtype": args.dtype,
        "device": args.device,
        "device_name": (
            torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
        ),
        "threads": torch.get_num_threads(),
        "facts": len(nc1),
        "tokens": min(args.tokens, len(tokenizer)),
        "heads": [h[0] for h in heads],
        "batch_size": args.batch_size,
        "prompt_tokens": len(ids),
        "attack_slot": slot,
        "control_slot": control_slot,
        "positions_per_candidate": {"old": tokens_old, "new": tokens_new},
        "seconds_per_fact_token": seconds,
        "cpu_seconds_per_fact_token": cpu_seconds,
        "median_ratio": statistics.median(ratios),
        "ratios": ratios,
        "median_cpu_ratio": statistics.median(cpu_ratios),
        "cpu_ratios": cpu_ratios,
        "memory": peaks,
        "agreement": agree,
    }
    write_figures(args.json, out)
    return out


if __name__ == "__main__":
    main()
