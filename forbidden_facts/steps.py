"""The workflow's steps: read a job's inputs, call the library, write its outputs.

Each function takes a job object with ``input``, ``output``, ``params``,
``wildcards``, ``threads`` and ``log`` (Snakemake's ``snakemake`` object in a
rule, or the namespace that ``forbidden-facts run-step`` builds by hand), so a
researcher can debug one step outside Snakemake.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import io
from .provenance import sha256_file, stamp

log = logging.getLogger("forbidden_facts")

STEPS: dict = {}


def step(fn):
    """Register a step under its function name."""
    STEPS[fn.__name__] = fn
    return fn


def setup_logging(logfile: str | None) -> None:
    """Send the package's logging to the job's log file and to stderr."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers = [logging.StreamHandler(sys.stderr)]
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(logfile, mode="w"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)


def _terminate(signum, _frame) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def run_from_snakemake(smk, name: str) -> None:
    """Entry point of the thin scripts: run step `name` for a Snakemake job."""
    setup_logging(smk.log[0] if len(smk.log) else None)
    # Snakemake stops jobs with SIGTERM; turning it into SystemExit lets every
    # `finally` remove its temporary files instead of leaving them behind.
    signal.signal(signal.SIGTERM, _terminate)
    start = time.perf_counter()
    try:
        STEPS[name](smk)
    except Exception as exc:
        # One readable paragraph in the log and on the console instead of a bare traceback.
        log.error("%s failed: %s", name, exc)
        log.debug("traceback", exc_info=True)
        raise SystemExit(f"forbidden-facts step {name!r} failed: {exc}") from exc
    log.info("%s finished in %.1f s", name, time.perf_counter() - start)


# ---------------------------------------------------------------------------
# helpers


def _model_kwargs(params) -> dict:
    m = params.model
    return dict(
        dtype=m.get("dtype", "float32"),
        device=m.get("device", "auto"),
        device_map=m.get("device_map"),
        allow_cpu_offload=m.get("allow_cpu_offload", False),
    )


def _load(job, attn_implementation: str = "eager"):
    import torch

    from .modeling import load_model

    torch.set_num_threads(max(1, int(getattr(job, "threads", 1) or 1)))
    return load_model(
        job.input.model, attn_implementation=attn_implementation, **_model_kwargs(job.params)
    )


def _inherit(path, **extra) -> dict:
    """Provenance of an input artifact, refreshed with this step's code version."""
    prov = io.read_provenance(path)
    fresh = stamp()
    prov.update(code_version=fresh["code_version"], created=fresh["created"])
    prov.update(extra)
    return prov


def _kept_prompts(prompts_path, inference_path) -> pd.DataFrame:
    prompts = io.read_parquet(prompts_path)
    inference = io.read_parquet(inference_path)
    kept = set(inference.loc[inference["kept"], "fact_id"])
    return prompts[prompts["fact_id"].isin(kept)].reset_index(drop=True)


def _words(path) -> list[str]:
    return [w.strip() for w in Path(path).read_text().splitlines() if w.strip()]


def _evaluation_words(words_path, model_dir) -> list[str]:
    """The irrelevant words a model is evaluated on: the organism's held-out ones."""
    from .toy import read_training_record

    words = _words(words_path)
    record = read_training_record(model_dir)
    if record is not None:
        trained = set(record["train_words"])
        words = [w for w in words if w not in trained]
    return words


# ---------------------------------------------------------------------------
# model stage


@step
def train_toy_model(job) -> None:
    from .datasets import load_facts
    from .toy import ToyConfig, train_toy

    params = dict(job.params.toy)
    params.pop("facts", None)
    cfg = ToyConfig(**params)
    facts = load_facts(job.input.facts)
    facts = facts[facts["answer"].str.fullmatch(r"[^\s]+")]
    out = Path(job.output[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a run that was killed outright
    # Train into a hidden sibling and rename: a killed run never leaves a half model.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        record = train_toy(facts, _words(job.input.words), tmp, cfg)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info(
        "trained the toy in %.1f s, final loss %.4f", record["train_seconds"], record["final_loss"]
    )


@step
def download_model(job) -> None:
    from .hub import download_model as fetch

    m = job.params.model
    fetch(m["repo_id"], m.get("revision", "main"), job.output[0])


@step
def model_card(job) -> None:
    from transformers import AutoConfig

    from .toy import read_training_record

    cfg = AutoConfig.from_pretrained(job.input.model)
    inference = io.read_json(job.input.inference)
    n_params = 0
    from safetensors import safe_open

    for f in sorted(Path(job.input.model).glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for key in st.keys():
                n_params += int(np.prod(st.get_slice(key).get_shape()))
    card = {
        "model": job.wildcards.model,
        "n_params": n_params,
        "n_layers": cfg.num_hidden_layers,
        "n_heads": cfg.num_attention_heads,
        "n_kv_heads": getattr(cfg, "num_key_value_heads", cfg.num_attention_heads),
        "d_model": cfg.hidden_size,
        "vocab_size": cfg.vocab_size,
        "dataset": inference.get("dataset"),
        "frac_known": inference["n_kept"] / inference["n_facts"] if inference["n_facts"] else None,
        "n_facts": inference["n_facts"],
        "n_kept": inference["n_kept"],
        "total_effect_log10": inference["total_effect_log10"],
    }
    record = read_training_record(job.input.model)
    if record is not None:
        card["train_seconds"] = record["train_seconds"]
        card["seed"] = record["config"]["seed"]
        card["n_train_words"] = len(record["train_words"])
        card["n_held_out_words"] = len(record["held_out_words"])
    if len(job.input.mechanism):
        from .identification import mechanism_figures

        card["mechanism"] = mechanism_figures(*job.input.mechanism)
    io.write_json(job.output[0], card, provenance=stamp(job.wildcards.model, job.input.model))


# ---------------------------------------------------------------------------
# datasets, prompts, inference


@step
def download_dataset(job) -> None:
    from .datasets import download_counterfact

    spec = job.params.dataset
    info = download_counterfact(
        spec["url"], job.output.data, sha256=spec.get("sha256"), name=job.wildcards.dataset
    )
    io.write_json(job.output.record, info, provenance=stamp(dataset=job.wildcards.dataset))


@step
def prepare_dataset(job) -> None:
    from .datasets import load_facts_with_skipped

    source = Path(job.input.source)
    facts, skipped = load_facts_with_skipped(source)
    report: dict = {"dataset": job.wildcards.dataset, "skipped": skipped}
    max_facts = job.params.dataset.get("max_facts")
    if max_facts:
        facts = facts.iloc[:max_facts]
    checksum = sha256_file(source)
    report.update(
        source=str(source), sha256=checksum, n_facts=len(facts), n_skipped=len(report["skipped"])
    )
    prov = stamp(dataset=job.wildcards.dataset, dataset_sha256=checksum)
    io.write_parquet(job.output.facts, facts, provenance=prov)
    io.write_json(job.output.report, report, provenance=prov)
    log.info(
        "dataset %s: %d facts (%d malformed records skipped)",
        job.wildcards.dataset,
        len(facts),
        len(report["skipped"]),
    )


@step
def prompts(job) -> None:
    from transformers import AutoTokenizer

    from .prompts import assign_irrelevant_words, build_prompts, single_token_answers

    facts = io.read_parquet(job.input.facts)
    tokenizer = AutoTokenizer.from_pretrained(job.input.model)
    words = _evaluation_words(job.input.words, job.input.model)
    kept, reasons = single_token_answers(facts, tokenizer)
    table = build_prompts(kept, assign_irrelevant_words(kept, words))
    summary = {
        "n_facts_in": len(facts),
        "n_facts": len(kept),
        "n_dropped": len(facts) - len(kept),
        "dropped_by_reason": reasons,
        "n_prompts": len(table),
        "n_irrelevant_words": len(set(table.loc[table["kind"] == "nc1", "forbidden_word"])),
    }
    prov = _inherit(job.input.facts, **stamp(job.wildcards.model, job.input.model))
    io.write_parquet(job.output.prompts, table, provenance=prov)
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info("%d facts in, %d dropped (%s)", len(facts), len(facts) - len(kept), reasons)


@step
def inference(job) -> None:
    from .inference import run_inference, total_effect

    model, tokenizer = _load(job, attn_implementation="sdpa")
    prompts = io.read_parquet(job.input.prompts)
    table = run_inference(
        model, tokenizer, prompts, batch_size=job.params.model.get("batch_size", 32)
    )
    summary = {
        "dataset": job.wildcards.dataset,
        "model": job.wildcards.model,
        **total_effect(table),
    }
    relations = prompts.drop_duplicates("fact_id").set_index("fact_id")["relation"]
    summary["by_relation"] = {
        rel: total_effect(table[table["fact_id"].isin(set(ids))])
        for rel, ids in relations.groupby(relations).groups.items()
    }
    prov = _inherit(job.input.prompts)
    io.write_parquet(job.output.table, table, provenance=prov)
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info(
        "kept %d of %d facts; total effect %.3f log10",
        summary["n_kept"],
        summary["n_facts"],
        summary["total_effect_log10"],
    )


# ---------------------------------------------------------------------------
# attribution and identification


def shard_facts(fact_ids: list[str], shard: int, n_shards: int) -> list[str]:
    """Contiguous block `shard` of `n_shards` over the facts in dataset order."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside 0..{n_shards - 1}")
    blocks = np.array_split(np.arange(len(fact_ids)), n_shards)
    return [fact_ids[i] for i in blocks[shard]]


@step
def attribution_shard(job) -> None:
    from .patching import attribute

    shard, n = int(job.wildcards.shard), int(job.wildcards.n)
    prompts = _kept_prompts(job.input.prompts, job.input.inference)
    order = list(dict.fromkeys(prompts["fact_id"]))
    mine = set(shard_facts(order, shard, n))
    prompts = prompts[prompts["fact_id"].isin(mine)]
    model, tokenizer = _load(job, attn_implementation="sdpa")
    m = job.params.model
    frames = (
        list(
            attribute(
                model,
                tokenizer,
                prompts,
                batch_size=m.get("attribution_batch_size", 8),
                row_batch=m.get("row_batch", 4096),
            )
        )
        if len(prompts)
        else []
    )
    columns = ["fact_id", "pair", "direction", "component", "delta_logodds"]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    io.write_parquet(
        job.output[0], table, provenance=_inherit(job.input.inference, shard=f"{shard}-of-{n}")
    )
    log.info("shard %d of %d: %d facts, %d rows", shard, n, len(mine), len(table))


@step
def merge_attribution(job) -> None:
    frames = [io.read_parquet(p) for p in job.input]
    table = pd.concat(frames, ignore_index=True)
    prov = _inherit(job.input[0])
    prov.pop("shard", None)
    prov["n_shards"] = len(frames)
    io.write_parquet(job.output[0], table, provenance=prov)


@step
def rank_components(job) -> None:
    from .identification import rank_components as rank

    attribution = io.read_parquet(job.input.attribution)
    labels = list(dict.fromkeys(attribution["component"]))
    io.write_parquet(
        job.output[0], rank(attribution, labels), provenance=_inherit(job.input.attribution)
    )


@step
def cumulative_patching(job) -> None:
    from .identification import (
        bootstrap_n_star,
        cumulative_curve,
        curve_length,
        k_shares,
        n_star,
        promotive_summary,
    )
    from .inference import pair_bayes_factors
    from .metrics import to_log10
    from .patching import cumulative

    params = job.params.identification
    comps = io.read_parquet(job.input.components)
    inference = io.read_parquet(job.input.inference)
    prompts = _kept_prompts(job.input.prompts, job.input.inference)
    model, tokenizer = _load(job, attn_implementation="sdpa")
    m = job.params.model
    order = list(comps["component"])
    # The curve first goes to k_min; if N* lies beyond half of it, extend to 2 N*.
    k = curve_length(len(order), None, params["k_min"])
    while True:
        values, fact_ids, pairs = cumulative(
            model,
            tokenizer,
            prompts,
            order[:k],
            batch_size=m.get("attribution_batch_size", 8),
            row_batch=m.get("row_batch", 4096),
        )
        values = to_log10(values)
        lbf = pair_bayes_factors(inference).set_index(["fact_id", "pair"])["lbf"]
        effect = -to_log10(lbf.loc[list(zip(fact_ids, pairs, strict=True))].to_numpy())
        total = float(effect.mean())
        ns = n_star(values.mean(axis=0), total)
        want = curve_length(len(order), ns, params["k_min"])
        if want <= k:
            break
        k = want
    curve = cumulative_curve(values, order[:k], comps["mean_log10"].to_numpy()[:k])
    ci_low, ci_high, ci_share = bootstrap_n_star(
        values, effect, fact_ids, params["n_bootstrap"], params["seed"]
    )
    top = comps.iloc[0]
    star = comps.iloc[:ns] if ns else comps.iloc[:0]
    summary = {
        "model": job.wildcards.model,
        "dataset": job.wildcards.dataset,
        "n_kept": int(len(set(fact_ids))),
        "n_pairs": int(len(fact_ids)),
        "n_components": int(len(order)),
        "total_effect_log10": total,
        "n_star": ns,
        "n_star_heads": int((star["type"] == "head").sum()),
        "n_star_mlps": int((star["type"] == "mlp").sum()),
        "n_star_embed": int((star["type"] == "embed").sum()),
        "n_star_ci": [ci_low, ci_high],
        "n_star_ci_share_found": ci_share,
        **k_shares(curve["mean_log10"].to_numpy(), total),
        "top_component": top["component"],
        "top_component_mean_log10": float(top["mean_log10"]),
        "n_suppressive_significant": int((comps["role"] == "suppressive").sum()),
        **promotive_summary(comps),
        "curve_k_max": int(k),
    }
    prov = _inherit(job.input.components)
    io.write_parquet(job.output.curve, curve, provenance=prov)
    with io.atomic_path(job.output.pairs) as tmp:
        np.savez_compressed(
            tmp,
            values_log10=values,
            fact_id=np.asarray(fact_ids),
            pair=np.asarray(pairs),
            components=np.asarray(order[:k]),
            effect_log10=effect,
        )
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info(
        "N* = %s of %d components (total effect %.3f log10), top %s",
        ns,
        len(order),
        total,
        top["component"],
    )


# ---------------------------------------------------------------------------
# heads and attacks


def _nc1(prompts: pd.DataFrame) -> pd.DataFrame:
    return prompts[prompts["kind"] == "nc1"].reset_index(drop=True)


@step
def heads(job) -> None:
    import torch

    from .heads import attention_example, forbidden_attention, head_table, ov_scores, top_heads

    params = job.params.heads
    comps = io.read_parquet(job.input.components)
    prompts = _kept_prompts(job.input.prompts, job.input.inference)
    model, tokenizer = _load(job, attn_implementation="eager")
    rows = None
    if params.get("ov_rows"):
        gen = torch.Generator().manual_seed(0)
        rows = torch.randperm(len(tokenizer), generator=gen)[: params["ov_rows"]].sort().values
    ov = ov_scores(model, vocab_chunk=params["vocab_chunk"], rows=rows)
    attention = forbidden_attention(
        model, tokenizer, prompts, batch_size=job.params.model.get("attribution_batch_size", 8) * 2
    )
    table = head_table(ov, attention, comps)
    example_fact = params.get("example_fact") or (
        prompts["fact_id"].iloc[0] if len(prompts) else None
    )
    prov = _inherit(job.input.components, ov_rows=params.get("ov_rows"))
    io.write_parquet(job.output.table, table, provenance=prov)
    example = (
        attention_example(
            model, tokenizer, prompts, example_fact, top_heads(comps, params["top_k"])
        )
        if example_fact is not None
        else {"fact_id": "", "heads": []}
    )
    with io.atomic_path(job.output.example) as tmp:
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in example.items()})
    top = table.nsmallest(params["top_k"], "rank")
    log.info(
        "top-%d heads: OV %.3f vs %.3f, attention(c) %.4f vs %.4f",
        params["top_k"],
        top["ov_score"].mean(),
        table.drop(top.index)["ov_score"].mean(),
        top["attn_forbidden_c"].mean(),
        table.drop(top.index)["attn_forbidden_c"].mean(),
    )


@step
def attack_self_insertion(job) -> None:
    from .attack import self_insertion
    from .prompts import irrelevant_word_candidates

    prompts = _kept_prompts(job.input.prompts, job.input.inference)
    all_answers = io.read_parquet(job.input.prompts)["answer"].unique()
    # Control words: evaluation words that are no substring of any answer, as for nc1.
    pool = irrelevant_word_candidates(
        _evaluation_words(job.input.words, job.input.model), all_answers
    )
    model, tokenizer = _load(job, attn_implementation="sdpa")
    table, summary = self_insertion(
        model,
        tokenizer,
        _nc1(prompts),
        pool,
        seed=job.params.attack["seed"],
        batch_size=job.params.model.get("batch_size", 32),
    )
    summary = {"model": job.wildcards.model, "dataset": job.wildcards.dataset, **summary}
    prov = _inherit(job.input.inference)
    io.write_parquet(job.output.table, table, provenance=prov)
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info(
        "self-insertion: mean Δ log10 odds %.3f (control %.3f), top-1 flipped %.1f%% (control %.1f%%)",
        summary["mean_delta_logodds_log10"] or 0,
        summary["control_mean_delta_logodds_log10"] or 0,
        100 * (summary["frac_top1_flipped"] or 0),
        100 * (summary["control_frac_top1_flipped"] or 0),
    )


@step
def attack_tokens(job) -> None:
    from .attack import token_search

    params = job.params.attack
    heads_table = io.read_parquet(job.input.heads).sort_values("rank")
    top = heads_table.head(params["top_k_heads"])
    heads = [
        (c, int(layer), int(h))
        for c, layer, h in zip(top["component"], top["layer"], top["head"], strict=True)
    ]
    nc1 = _nc1(_kept_prompts(job.input.prompts, job.input.inference))
    if len(nc1) > params["n_facts"]:
        rng = np.random.default_rng(params["seed"])
        pick = np.sort(rng.choice(len(nc1), params["n_facts"], replace=False))
        nc1 = nc1.iloc[pick].reset_index(drop=True)
    model, tokenizer = _load(job, attn_implementation="eager")
    table = (
        token_search(model, tokenizer, nc1, heads, batch_size=params["batch_size"])
        if len(nc1) and heads
        else pd.DataFrame(
            columns=[
                "component",
                "fact_id",
                "token",
                "token_id",
                "attention",
                "delta_logodds_log10",
                "rank",
            ]
        )
    )
    io.write_parquet(job.output[0], table, provenance=_inherit(job.input.heads))


# ---------------------------------------------------------------------------
# figures


def _title(job) -> str:
    return f"{job.wildcards.model} / {job.wildcards.dataset}"


@step
def figure_overview(job) -> None:
    from . import plots

    plots.overview(
        io.read_parquet(job.input.inference), job.output.png, job.output.pdf, title=_title(job)
    )


@step
def figures_attribution(job) -> None:
    from . import plots

    comps = io.read_parquet(job.input.components)
    curve = io.read_parquet(job.input.curve)
    summary = io.read_json(job.input.summary)
    pdfs = dict(
        zip(
            ["top", "cumulative", "independence", "heatmap", "waluigi"],
            job.output.pdfs,
            strict=True,
        )
    )
    title = _title(job)
    plots.top_components(comps, job.output.top, pdfs["top"], top_n=job.params.top_n, title=title)
    plots.cumulative(curve, summary, job.output.cumulative, pdfs["cumulative"], title=title)
    plots.independence(curve, job.output.independence, pdfs["independence"], title=title)
    plots.layer_head_heatmap(comps, job.output.heatmap, pdfs["heatmap"], title=title)
    plots.luigi_waluigi(
        comps, job.output.waluigi, pdfs["waluigi"], top_n=job.params.top_n, title=title
    )


@step
def figures_heads(job) -> None:
    from . import plots

    heads_table = io.read_parquet(job.input.heads)
    top = list(heads_table.nsmallest(job.params.top_k, "rank")["component"])
    example = {k: v.tolist() if v.ndim == 1 else v for k, v in np.load(job.input.example).items()}
    example["fact_id"] = str(np.load(job.input.example)["fact_id"])
    pdfs = dict(zip(["stats", "pattern"], job.output.pdfs, strict=True))
    plots.head_statistics(heads_table, top, job.output.stats, pdfs["stats"], title=_title(job))
    plots.attention_pattern(example, job.output.pattern, pdfs["pattern"], title=_title(job))


@step
def figures_attack(job) -> None:
    from . import plots

    pdfs = dict(zip(["versus", "tokens"], job.output.pdfs, strict=True))
    plots.attack_vs_control(
        io.read_parquet(job.input.attack), job.output.versus, pdfs["versus"], title=_title(job)
    )
    plots.attack_tokens(
        io.read_parquet(job.input.tokens), job.output.tokens, pdfs["tokens"], title=_title(job)
    )


from . import paper_steps  # noqa: E402,F401  (registers tables, paper, archive)
