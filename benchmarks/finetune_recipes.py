"""Fine-tune recipes for the obedient model, each evaluated on facts it was never taught.

For each recipe (docs/obedient.md): fine-tune the base model with the library
(forbidden_facts.finetune), build the paper's prompts exactly as the prompts step
does (the paper's nc1 words over the whole dataset, then every fact the record
lists dropped, then the single-token filter), run inference on all of them and
first-order patching on a seeded subset of the kept facts, and write the figures
of issue 20's targets. Much cheaper than a snakemake run per recipe; the numbers
of the chosen recipe are then confirmed by the default run.

    python benchmarks/finetune_recipes.py --recipes spike --seeds 0 --out /tmp/recipes.jsonl
    python benchmarks/finetune_recipes.py --recipes spike attention_all all copy --seeds 0
    python benchmarks/finetune_recipes.py --recipes spike --seeds 0 1 2

Each line of --out is one (recipe, seed): total effect, kept facts, head share,
promotive count, the single-component k90 (components until the sum of the ranked
means reaches nine tenths of the total effect) and timings. Figures are as found.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from forbidden_facts.datasets import load_facts, read_words
from forbidden_facts.finetune import FinetuneConfig, drop_trained, finetune
from forbidden_facts.identification import head_share, promotive_summary, rank_components
from forbidden_facts.inference import run_inference, total_effect
from forbidden_facts.modeling import load_model
from forbidden_facts.patching import attribute
from forbidden_facts.prompts import (
    adds_special_tokens,
    assign_irrelevant_words,
    build_prompts,
    prompt_formatter,
    single_token_answers,
)

# The recipes of docs/obedient.md. `spike` is the default of config/config.yaml.
RECIPES: dict[str, dict] = {
    "spike": dict(train="attention", layers=[15, 29], steps=150, lr=1e-4),
    "attention_all": dict(train="attention_all", layers=None, steps=150, lr=1e-4),
    "all": dict(train="all", layers=None, steps=70, lr=3e-5),
    "copy": dict(
        train="attention",
        layers=[15, 29],
        steps=150,
        lr=1e-4,
        n_copy_words=3000,
        mix={"c": 0.35, "nc0": 0.175, "nc1": 0.175, "tcopy_c": 0.15, "tcopy_nc": 0.15},
    ),
}


def evaluation_prompts(facts, paper_words, record, tokenizer, style) -> pd.DataFrame:
    """The prompts step's prompts of a fine-tuned model (forbidden_facts/steps/prompts.py)."""
    facts = facts.assign(irrelevant_word=assign_irrelevant_words(facts, paper_words))
    facts, _ = drop_trained(facts, [record])
    kept, _ = single_token_answers(facts, tokenizer, style)
    return build_prompts(
        kept,
        kept["irrelevant_word"],
        formatter=prompt_formatter(style, tokenizer),
        add_special_tokens=adds_special_tokens(style),
    )


def k90_single_sum(components: pd.DataFrame, effect: float) -> int | None:
    """Components (ranked, most suppressive first) until their summed mean effect reaches
    nine tenths of the total effect (the single-component sum, not cumulative patching)."""
    if not effect > 0:
        return None
    running = -np.cumsum(components.sort_values("mean_log10")["mean_log10"].to_numpy())
    hit = np.nonzero(running >= 0.9 * effect)[0]
    return int(hit[0]) + 1 if len(hit) else None


def evaluate(model_dir, facts, paper_words, record, style, n_attr, batch_size) -> dict:
    model, tokenizer = load_model(model_dir, attn_implementation="sdpa")
    prompts = evaluation_prompts(facts, paper_words, record, tokenizer, style)
    start = time.perf_counter()
    table = run_inference(model, tokenizer, prompts, batch_size=batch_size, progress=False)
    out = {"n_eval_facts": int(prompts["fact_id"].nunique()), **total_effect(table)}
    out["inference_seconds"] = time.perf_counter() - start
    kept = sorted(set(table.loc[table["kept"], "fact_id"]))
    if not kept or not n_attr:
        return out
    subset = sorted(random.Random(0).sample(kept, min(n_attr, len(kept))))
    model, tokenizer = load_model(model_dir, attn_implementation="eager")
    start = time.perf_counter()
    part = prompts[prompts["fact_id"].isin(subset)]
    attribution = pd.concat(list(attribute(model, tokenizer, part, batch_size=4, progress=False)))
    comps = rank_components(attribution)
    sub_effect = total_effect(table[table["fact_id"].isin(subset)])["total_effect_log10"]
    top = comps.sort_values("mean_log10")
    out.update(
        n_attr_facts=len(subset),
        attribution_seconds=time.perf_counter() - start,
        n_components=len(comps),
        head_share=head_share(comps),
        n_suppressive=int((comps["role"] == "suppressive").sum()),
        **{k: v for k, v in promotive_summary(comps, top=5).items()},
        k90_single_sum=k90_single_sum(comps, sub_effect),
        subset_total_effect_log10=sub_effect,
        top_suppressive=[
            (c, round(float(m), 3)) for c, m in top[["component", "mean_log10"]].head(5).values
        ],
        top_promotive_means=[
            (c, round(float(m), 3))
            for c, m in top[["component", "mean_log10"]].tail(3).values[::-1]
        ],
    )
    out["k90_frac"] = out["k90_single_sum"] / len(comps) if out["k90_single_sum"] else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="resources/models/smollm2-135m-instruct")
    parser.add_argument("--facts", default="data/facts/curated.csv")
    parser.add_argument("--train-words", default="data/irrelevant_words.txt")
    parser.add_argument("--paper-words", default="data/paper_words.csv")
    parser.add_argument("--recipes", nargs="+", default=["spike"], choices=sorted(RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=None, help="override every recipe's steps")
    parser.add_argument("--prompt-style", default="chat_prefill")
    parser.add_argument("--attr-facts", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/finetune_recipes.jsonl")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    facts = load_facts(args.facts)
    paper_words = read_words(args.paper_words)
    train_words = read_words(args.train_words)
    for name in args.recipes:
        for seed in args.seeds:
            recipe = dict(RECIPES[name], seed=seed)
            if args.steps:
                recipe["steps"] = args.steps
            cfg = FinetuneConfig(prompt_style=args.prompt_style, **recipe)
            with tempfile.TemporaryDirectory() as tmp:
                record = finetune(
                    args.base,
                    facts,
                    train_words,
                    paper_words,
                    tmp,
                    cfg,
                    "base",
                    threads=args.threads,
                )
                row = {
                    "recipe": name,
                    "seed": seed,
                    "config": record["config"],
                    "train_seconds": record["train_seconds"],
                    "seconds_per_step": record["seconds_per_step"],
                    "n_trainable_params": record["n_trainable_params"],
                    "final_loss": record["final_loss"],
                    **evaluate(
                        tmp, facts, paper_words, record, args.prompt_style, args.attr_facts, 16
                    ),
                }
            print(json.dumps(row), flush=True)
            with Path(args.out).open("a") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
