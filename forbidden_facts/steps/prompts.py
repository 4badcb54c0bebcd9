"""Glue of workflow/rules/prompts.smk: datasets, prompts and the inference pass."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import io
from ..artifacts import FactsReport as R
from ..artifacts import Prompts as P
from ..provenance import sha256_file, stamp
from .common import evaluation_words, inherit, load, settings

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
    report: dict = {R.dataset: job.wildcards.dataset, R.skipped: skipped}
    max_facts = job.params.dataset["max_facts"]
    if max_facts:
        facts = facts.iloc[:max_facts]
    checksum = sha256_file(source)
    report |= {
        R.source: str(source),
        R.sha256: checksum,
        R.n_facts: len(facts),
        R.n_skipped: len(skipped),
    }
    prov = stamp(dataset=job.wildcards.dataset, dataset_sha256=checksum)
    io.write_parquet(job.output.facts, facts, provenance=prov)
    io.write_json(job.output.report, report, provenance=prov)
    log.info(
        "dataset %s: %d facts (%d malformed records skipped)",
        job.wildcards.dataset,
        len(facts),
        len(skipped),
    )


def prompts(job) -> None:
    from ..datasets import few_facts_warning
    from ..datasets.facts import check_plain_text
    from ..finetune import FINETUNE_RECORD, drop_trained, taught_words, trained_records
    from ..modeling import load_tokenizer
    from ..prompts import (
        adds_special_tokens,
        assign_irrelevant_words,
        build_prompts,
        fact_subset,
        prompt_formatter,
        single_token_answers,
        special_tokens,
    )

    facts = io.read_parquet(job.input.facts)
    # Before anything reads the model folder's records unchecked.
    chain = _finetune_chain(job)
    records = trained_records(chain)
    tokenizer = load_tokenizer(job.input.model)
    style = job.params.prompt_style  # config models.<name>.prompt_style
    # Fails here, before any output, when a chat style meets a tokenizer without a template.
    formatter = prompt_formatter(style, tokenizer)
    words = evaluation_words(job.input.words, job.input.model, records)
    check_plain_text(
        facts, words, special_tokens(tokenizer), str(job.input.facts), str(job.input.words)
    )
    # The paper's rule: words are assigned over the whole dataset, before the
    # single-token filter, so every kept fact gets the paper's nc1 word.
    facts = facts.assign(irrelevant_word=assign_irrelevant_words(facts, words))
    # A fine-tuned model never sees a fact it was trained on, nor one whose answer was a
    # training target or forbidden word, in its own fine-tune or any base's (their
    # checked finetune_record.json files list them): dropped before the subset and every
    # filter, so the analysis cannot see a trained fact.
    facts, excluded = drop_trained(facts, records)
    if excluded["n_excluded_trained"]:
        log.info(
            "dropped %d facts seen in the fine-tune (%s)",
            excluded["n_excluded_trained"],
            excluded["excluded_by_reason"],
        )
    model_max = job.params.max_facts
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
    # A prompt longer than the model's context would be silently truncated or fail in
    # the forward pass: drop its fact, and count it.
    context = _context_length(job.input.model)
    too_long = []
    if context and len(table):
        special = adds_special_tokens(style)
        lengths = table["prompt"].map(
            lambda text: len(tokenizer(text, add_special_tokens=special)["input_ids"])
        )
        too_long = sorted(set(table.loc[lengths > context, "fact_id"]))
    if too_long:
        table = table[~table["fact_id"].isin(too_long)].reset_index(drop=True)
        kept = kept[~kept["fact_id"].isin(too_long)]
        reasons = {**reasons, "longer_than_context": len(too_long)}
        log.warning(
            "%d fact(s) have a prompt longer than the model's %d positions "
            "(max_position_embeddings) and are dropped, e.g. %s",
            len(too_long),
            context,
            ", ".join(map(str, too_long[:3])),
        )
    # Reported as found: an nc0 prompt may forbid a word the fine-tune taught (another
    # answer of the relation that was a training target), which never-taught facts allow.
    nc0_words = table.loc[table["kind"] == "nc0", "forbidden_word"].str.lower()
    summary = {
        P.prompt_style: style,
        **excluded,
        P.finetune_chain: [
            {"model_dir": str(folder), "record_sha256": sha256_file(Path(folder) / FINETUNE_RECORD)}
            for folder in chain
        ],
        P.n_nc0_taught_word: int(nc0_words.isin(taught_words(records)).sum()),
        P.n_nc0: len(nc0_words),
        P.model_max_facts: model_max,
        P.n_facts_in: len(facts),
        P.n_facts: len(kept),
        P.n_dropped: len(facts) - len(kept),
        P.dropped_by_reason: reasons,
        P.n_prompts: len(table),
        P.n_irrelevant_words: len(set(table.loc[table["kind"] == "nc1", "forbidden_word"])),
        P.warnings: [],
    }
    few = few_facts_warning(
        len(kept), f"dataset {job.wildcards.dataset}: facts with a single-token answer"
    )
    if few:
        summary[P.warnings].append(few)
        log.warning(few)
    if too_long:
        summary[P.warnings].append(
            f"{len(too_long)} fact(s) dropped: a prompt is longer than the model's "
            f"{context} positions (max_position_embeddings)"
        )
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


def _finetune_chain(job) -> list[str]:
    """The model's folder and its fine-tuned bases' (nearest first; empty: not fine-tuned).

    Under Snakemake the config names them (`get_finetune_chain` in
    workflow/rules/common.smk, with each record's sha256, so that a changed record reruns
    this step); run by hand, the folders themselves say.
    """
    from ..finetune import finetune_chain

    planned = getattr(job.params, "finetune_chain", None)
    if planned is None:
        return [str(folder) for folder in finetune_chain(job.input.model)]
    return [entry["model_dir"] for entry in planned]


def _context_length(model_dir) -> int | None:
    """The model's `max_position_embeddings` (None when its config.json does not say)."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return None
    value = io.read_json(config).get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def inference(job) -> None:
    from ..artifacts import Inference as S
    from ..datasets import few_facts_warning
    from ..inference import run_inference, total_effect

    model, tokenizer = load(job, attn_implementation="sdpa")
    prompts = io.read_parquet(job.input.prompts)
    table = run_inference(model, tokenizer, prompts, batch_size=settings(job).batch_size)
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
