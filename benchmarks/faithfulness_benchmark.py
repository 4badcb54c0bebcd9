"""Benchmark: patching with recomputation on the key/value cache vs full forward passes.

The rule `faithfulness` patches, per (fact, pair), 2 + 3 top_k variants (nothing,
everything, each top component alone, the top-k, all but the top-k) with every later
layer recomputed. The fast path runs each nc prompt once without its last token and
each variant as one token on that cache; the reference runs every variant's whole
prompt. Both are `forbidden_facts.recomputation.recompute` (``cached=True/False``) on
the same prompts. Prints the seconds per variant of each path, their ratio (goal: the
cached path at least 5x faster), the largest difference between the two paths' effects
(they must agree to float noise), and the cached path's seconds for all the facts (the
stage's recomputation; the rule adds loading and the summaries). Not a test: run it by
hand, e.g.

    python benchmarks/faithfulness_benchmark.py --model resources/models/smollm2-135m-obedient \\
        --prompt-style chat --facts 16 --full-facts 2
    python benchmarks/faithfulness_benchmark.py --preset smollm2-135m --facts 4 --full-facts 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from forbidden_facts.decompose import model_labels
from forbidden_facts.metrics import VocabIndex
from forbidden_facts.recomputation import recompute

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale_benchmark import benchmark_case  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default=str(ROOT / "resources/models/toy"))
    ap.add_argument(
        "--preset",
        default=None,
        help="instead of --model: a random-weight shape of scale_benchmark.py",
    )
    ap.add_argument("--layers", type=int, default=None, help="with --preset: blocks kept")
    ap.add_argument("--prompt-style", default="llama2", help="llama2, chat or chat_prefill")
    ap.add_argument("--facts", type=int, default=16, help="facts of the cached path (the stage)")
    ap.add_argument("--full-facts", type=int, default=2, help="facts of the full-forward path")
    ap.add_argument("--top-k", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8, help="facts per batch of prompts")
    ap.add_argument("--row-batch", type=int, default=64, help="variants per forward pass")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="alternating pairs of the two paths")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", FutureWarning)
    model, tok, name, prompts = benchmark_case(args, ROOT)
    vocab = VocabIndex(tok)
    # The top components of a real run come from its ranking; here the first top_k
    # labels after EMBED (any set costs the same).
    top = model_labels(model)[1 : args.top_k + 1]
    n_var = 2 + 3 * len(top)
    few = prompts[prompts["fact_id"].isin(list(prompts["fact_id"].unique()[: args.full_facts]))]

    def run(table, cached):
        start = time.perf_counter()
        out = recompute(
            model,
            tok,
            table,
            top,
            batch_size=args.batch_size,
            row_batch=args.row_batch,
            vocab=vocab,
            cached=cached,
            progress=False,
        )
        return out, time.perf_counter() - start

    print(
        f"model {name}, device {args.device}, dtype {args.dtype}, threads {args.threads}, "
        f"top_k {len(top)} ({n_var} variants per fact and pair)",
        flush=True,
    )
    recompute(model, tok, few, top[:2], batch_size=1, vocab=vocab, progress=False)  # warm-up
    n_few = 2 * few["fact_id"].nunique() * n_var
    # The two paths alternate, so that each ratio compares runs made under the same load
    # (the development machine is shared).
    ratios, fast, full = [], [], []
    for _ in range(args.repeats):
        fast_few, t_fast = run(few, True)
        full_few, t_full = run(few, False)
        fast.append(t_fast)
        full.append(t_full)
        ratios.append(t_full / t_fast)
        print(
            f"key/value cache {t_fast / n_few * 1e3:.1f} ms per variant, full forward passes "
            f"{t_full / n_few * 1e3:.1f} ms ({n_few} variants, "
            f"{few['fact_id'].nunique()} facts): {t_full / t_fast:.1f}x",
            flush=True,
        )
    print(
        f"speed-up of the cached path: median {statistics.median(ratios):.1f}x over "
        f"{args.repeats} adjacent pairs (goal >= 5)"
    )
    diff = max(
        float(np.abs(getattr(fast_few, k) - getattr(full_few, k)).max())
        for k in ("single", "top_k", "rest_k", "logodds_nc")
    )
    print(f"largest difference between the paths: {diff:.2e} natural log-odds", flush=True)
    every, t_stage = run(prompts, True)
    n_all = 2 * prompts["fact_id"].nunique() * n_var
    print(
        f"stage recomputation, cached: {t_stage:.1f} s for {prompts['fact_id'].nunique()} "
        f"facts ({n_all} variants); total effect {np.mean(every.total) / np.log(10):.3f} log10"
    )


if __name__ == "__main__":
    main()
