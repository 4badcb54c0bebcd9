"""Glue of workflow/rules/prompts.smk: datasets, prompts and the inference pass."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import io
from ..provenance import sha256_file, stamp
from .common import evaluation_words, inherit, load

log = logging.getLogger("forbidden_facts")

__all__ = ["download_dataset", "prepare_dataset", "prompts", "inference"]


def download_dataset(job) -> None:
    from ..datasets import download_dataset

    spec = job.params.dataset
    info = download_dataset(
        spec["url"], job.output.data, sha256=spec["sha256"], name=job.wildcards.dataset
    )
    io.write_json(job.output.record, info, provenance=stamp(dataset=job.wildcards.dataset))


def prepare_dataset(job) -> None:
    from ..datasets import load_facts_with_skipped

    source = Path(job.input.source)
    spec = job.params.dataset
    # A download has no telling extension: its format is `format`, else CounterFact's.
    fmt = spec.get("format") or ("counterfact" if "url" in spec else None)
    facts, skipped = load_facts_with_skipped(source, fmt)
    report: dict = {"dataset": job.wildcards.dataset, "skipped": skipped}
    max_facts = job.params.dataset["max_facts"]
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


def prompts(job) -> None:
    from transformers import AutoTokenizer

    from ..datasets import few_facts_warning
    from ..finetune import drop_trained, read_finetune_record
    from ..prompts import (
        DEFAULT_STYLE,
        adds_special_tokens,
        assign_irrelevant_words,
        build_prompts,
        fact_subset,
        prompt_formatter,
        single_token_answers,
    )

    facts = io.read_parquet(job.input.facts)
    tokenizer = AutoTokenizer.from_pretrained(job.input.model)
    style = getattr(job.params, "prompt_style", DEFAULT_STYLE)
    # Fails here, before any output, when a chat style meets a tokenizer without a template.
    formatter = prompt_formatter(style, tokenizer)
    words = evaluation_words(job.input.words, job.input.model)
    # The paper's rule: words are assigned over the whole dataset, before the
    # single-token filter, so every kept fact gets the paper's nc1 word.
    facts = facts.assign(irrelevant_word=assign_irrelevant_words(facts, words))
    # A fine-tuned model never sees a fact it was trained on, nor one whose answer was a
    # training target or forbidden word (its finetune_record.json lists them): dropped
    # before the subset and every filter, so the analysis cannot see a trained fact.
    facts, excluded = drop_trained(facts, read_finetune_record(job.input.model))
    if excluded["n_excluded_trained"]:
        log.info(
            "dropped %d facts seen in the fine-tune (%s)",
            excluded["n_excluded_trained"],
            excluded["excluded_by_reason"],
        )
    model_max = getattr(job.params, "max_facts", None)
    if model_max:
        # This model's subset (config models.<name>.max_facts), drawn after the words
        # are assigned so that each kept fact keeps the paper's nc1 word.
        facts = fact_subset(facts, model_max)
    kept, reasons = single_token_answers(facts, tokenizer, style)
    table = build_prompts(
        kept,
        kept["irrelevant_word"],
        formatter=formatter,
        add_special_tokens=adds_special_tokens(style),
    )
    summary = {
        "prompt_style": style,
        **excluded,
        "model_max_facts": model_max,
        "n_facts_in": len(facts),
        "n_facts": len(kept),
        "n_dropped": len(facts) - len(kept),
        "dropped_by_reason": reasons,
        "n_prompts": len(table),
        "n_irrelevant_words": len(set(table.loc[table["kind"] == "nc1", "forbidden_word"])),
        "warnings": [],
    }
    few = few_facts_warning(
        len(kept), f"dataset {job.wildcards.dataset}: facts with a single-token answer"
    )
    if few:
        summary["warnings"].append(few)
        log.warning(few)
    prov = inherit(job.input.facts, **stamp(job.wildcards.model, job.input.model))
    io.write_parquet(job.output.prompts, table, provenance=prov)
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info(
        "%s prompts: %d facts in, %d dropped (%s)",
        style,
        len(facts),
        len(facts) - len(kept),
        reasons,
    )


def inference(job) -> None:
    from ..artifacts import Inference as S
    from ..datasets import few_facts_warning
    from ..inference import run_inference, total_effect

    model, tokenizer = load(job, attn_implementation="sdpa")
    prompts = io.read_parquet(job.input.prompts)
    table = run_inference(model, tokenizer, prompts, batch_size=job.params.model["batch_size"])
    summary = {
        S.dataset: job.wildcards.dataset,
        S.model: job.wildcards.model,
        **total_effect(table),
    }
    relations = prompts.drop_duplicates("fact_id").set_index("fact_id")["relation"]
    few = few_facts_warning(
        summary[S.n_kept], f"{job.wildcards.model} on {job.wildcards.dataset}: known facts"
    )
    summary[S.warnings] = [few] if few else []
    if few:
        log.warning(few)
    summary[S.by_relation] = {
        rel: total_effect(table[table["fact_id"].isin(set(ids))])
        for rel, ids in relations.groupby(relations).groups.items()
    }
    prov = inherit(job.input.prompts)
    io.write_parquet(job.output.table, table, provenance=prov)
    io.write_json(job.output.summary, summary, provenance=prov)
    log.info(
        "kept %d of %d facts; total effect %.3f log10",
        summary[S.n_kept],
        summary[S.n_facts],
        summary[S.total_effect],
    )
