"""Benchmark: bare batched forward vs first-order attribution on the same prompts.

Prints prompts/s for both (best of --repeats, and the spread), their ratio (goal:
attribution >= 0.5x forward) and the peak memory of each phase. On CPU the peak
is the process's resident-set high-water mark (VmHWM, reset before each phase
through /proc/self/clear_refs after freed heap is handed back to the kernel, so it
counts the model weights, Python and torch, everything the phase really holds); on
CUDA it is torch's peak allocation. Not a test: run it by hand, e.g.

    python benchmarks/attribution_benchmark.py --model resources/models/toy
    python benchmarks/attribution_benchmark.py --model resources/models/llama2-7b-chat \\
        --device cuda --dtype float16 --facts 256 --batch-size 32 --attribution-batch-size 16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from forbidden_facts.metrics import VocabIndex
from forbidden_facts.modeling import chunks, encode, final_logits
from forbidden_facts.patching import attribute
from forbidden_facts.prompts import (
    adds_special_tokens,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale_benchmark import benchmark_case, trim_heap  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return
    # Freed heap back to the kernel first, so that the peak does not depend on what
    # the previous phase left in glibc's arenas; then writing 5 resets VmHWM (Linux)
    # to the current resident set size.
    trim_heap()
    Path("/proc/self/clear_refs").write_text("5")


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status: this benchmark measures memory on Linux")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default=str(ROOT / "resources/models/toy"))
    ap.add_argument(
        "--preset",
        default=None,
        help="instead of --model: a random-weight shape of scale_benchmark.py (llama2-7b, "
        "smollm2-135m, organism, ...), with a tokenizer of its vocabulary size",
    )
    ap.add_argument("--layers", type=int, default=None, help="with --preset: blocks kept")
    ap.add_argument("--prompt-style", default="llama2", help="llama2, chat or chat_prefill")
    ap.add_argument("--facts", type=int, default=128, help="facts to use (3 prompts each)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=64, help="prompts per bare forward pass")
    ap.add_argument(
        "--attribution-batch-size", type=int, default=16, help="facts per attribution pass"
    )
    ap.add_argument("--row-batch", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model, tok, model_name, prompts = benchmark_case(args, ROOT)
    style = args.prompt_style
    vocab = VocabIndex(tok)
    texts = list(prompts["prompt"])
    specials = adds_special_tokens(style)
    n_prompts = len(texts)

    def forward() -> None:
        with torch.no_grad():
            for sl in chunks(n_prompts, args.batch_size):
                final_logits(model, encode(tok, texts[sl], specials))

    def attribution() -> None:
        for _ in attribute(
            model,
            tok,
            prompts,
            batch_size=args.attribution_batch_size,
            row_batch=args.row_batch,
            vocab=vocab,
            progress=False,
        ):
            pass

    # Forward and attribution alternate, so that each ratio compares two runs made
    # under the same load (the development machine is shared).
    phases = (("forward", forward), ("attribution", attribution))
    peaks, times = {}, {name: [] for name, _ in phases}
    for name, fn in phases:
        _reset_peak(args.device)
        fn()  # warm-up, counted in the peak: the first pass allocates the most
        _sync(args.device)
        peaks[name] = _peak_mb(args.device)
    for _ in range(args.repeats):
        for name, fn in phases:
            start = time.perf_counter()
            fn()
            _sync(args.device)
            times[name].append(time.perf_counter() - start)
    results = {
        name: {
            "prompts/s": n_prompts / min(times[name]),
            "min prompts/s": n_prompts / max(times[name]),
            "peak MB": peaks[name],
        }
        for name, _ in phases
    }
    ratios = [f / a for f, a in zip(times["forward"], times["attribution"], strict=True)]
    n_layers = model.config.num_hidden_layers
    n_comp = 1 + n_layers * (model.config.num_attention_heads + 1)
    print(
        f"model {model_name} ({n_comp} components), device {args.device}, dtype {args.dtype}, "
        f"{prompts['fact_id'].nunique()} facts = {n_prompts} prompts, threads {args.threads}"
    )
    print(pd.DataFrame(results).T.round(2).to_string())
    print(
        f"attribution / forward throughput ratio: median {statistics.median(ratios):.2f} over "
        f"{args.repeats} adjacent pairs (each: {', '.join(f'{r:.2f}' for r in ratios)}) "
        "(goal >= 0.5)"
    )


if __name__ == "__main__":
    main()
