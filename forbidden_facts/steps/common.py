"""Helpers every stage's glue shares (the Python side of workflow/rules/common.smk)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from .. import io
from ..provenance import stamp

if TYPE_CHECKING:
    from ..config import ModelSettings

# Model settings that cannot change a result (where and how fast a model runs, how
# much memory a pass takes). They are left out of every rule's params
# (workflow/rules/common.smk), so that changing them reruns nothing; a step under
# Snakemake reads them from the job's config, a step run by hand from its --params.
RUNTIME_KEYS = (
    "device",
    "device_map",
    "allow_cpu_offload",
    "batch_size",
    "attribution_batch_size",
    "row_batch",
)


def settings(job, model: str | None = None) -> ModelSettings:
    """The job's model settings, typed: what changes results from its params, the rest
    (RUNTIME_KEYS) from the job's config.

    Under Snakemake the validated `models.<name>` block is the base, so every value is
    the config's; a step run by hand (``forbidden-facts run-step --params``) gets the
    schema's defaults for the keys its params leave out.

    Args:
        job: The Snakemake job (or the namespace of ``forbidden-facts run-step``).
        model: The configured model whose settings apply; None: the job's ``{model}``
            (the comparison's base-model jobs name the base here).
    """
    # Imported here: the figure steps run in envs/plot.yaml, without jsonschema or yaml.
    from ..config import ModelSettings

    config = getattr(job, "config", None) or {}
    model = model or getattr(getattr(job, "wildcards", None), "model", None)
    block = dict(config.get("models", {}).get(model, {}))
    return ModelSettings.from_config({**block, **dict(job.params.model)})


# The same for the config sections a rule takes whole: per-pass sizes only.
SECTION_RUNTIME_KEYS = {
    "heads": ("vocab_chunk",),
    "attack": ("batch_size",),
    "faithfulness": ("row_batch",),
}


def section_settings(job, section: str) -> dict:
    """Config section `section` as the job's params hold it, plus its run-time settings."""
    values = dict(getattr(job.params, section))
    config = getattr(job, "config", None)
    if config and section in config:
        keys = SECTION_RUNTIME_KEYS.get(section, ())
        values.update({k: config[section][k] for k in keys if k in config[section]})
    return values


def load(job, attn_implementation: str = "eager", model: str | None = None):
    """The job's model (``job.input.model``) and tokenizer, placed by `settings` of `model`."""
    import torch

    from ..modeling import load_model

    torch.set_num_threads(max(1, int(getattr(job, "threads", 1) or 1)))
    return load_model(
        job.input.model,
        attn_implementation=attn_implementation,
        **settings(job, model).load_kwargs(),
    )


def inherit(path, **extra) -> dict:
    """Provenance of an input artifact, refreshed with this step's code version."""
    prov = io.read_provenance(path)
    fresh = stamp()
    prov.update(code_version=fresh["code_version"], created=fresh["created"])
    prov.update(extra)
    return prov


class NoKeptFacts(ValueError):
    """The model knows none of the dataset's facts: there is nothing to analyse."""


def kept_prompts(prompts: pd.DataFrame, inference: pd.DataFrame) -> pd.DataFrame:
    """The prompts of the kept facts (the model knows them): prompts.parquet filtered by
    inference.parquet's ``kept``. Each step reads both files once and passes them here.

    Raises:
        NoKeptFacts: No fact is kept; every analysis step stops with this one sentence.
    """
    kept = set(inference.loc[inference["kept"].astype(bool), "fact_id"])
    out = prompts[prompts["fact_id"].isin(kept)].reset_index(drop=True)
    if out.empty:
        n = inference["fact_id"].nunique()
        raise NoKeptFacts(
            f"the model keeps 0 of the {n} facts it was run on (it knows none of them: "
            "inference.parquet's `kept` is false for every fact), so there is nothing to "
            "attribute, patch or attack; its inference_summary.json and overview figure "
            "say so. Run a model that knows facts of this dataset, or another dataset, "
            "and leave this pair out of `run`."
        )
    return out


def words(path) -> list[str]:
    from ..datasets import read_words

    return read_words(path)


def evaluation_words(words_path, model_dir, finetune_records=None) -> list[str]:
    """The irrelevant words every model is evaluated on: the whole list, as in the paper.

    The organism is trained on other words (`toy.train_words` minus these), so
    every evaluation word is held out; a model trained on any of them is refused.

    Args:
        finetune_records: The checked records of the model's chain of fine-tunes
            (`forbidden_facts.finetune.trained_records`); None: the folder's own record.
    """
    from ..datasets import DatasetError
    from ..finetune import read_finetune_record
    from ..toy import read_training_record

    chosen = words(words_path)
    if finetune_records is None:
        finetune_records = [read_finetune_record(model_dir)]
    for record in (read_training_record(model_dir), *finetune_records):
        if record is None:
            continue
        trained = {w.strip().lower() for w in record["train_words"]}
        leaked = sorted(trained & {w.strip().lower() for w in chosen})
        if leaked:
            raise DatasetError(
                f"{model_dir} was trained on {len(leaked)} of the evaluation words in "
                f"{words_path} ({', '.join(leaked[:5])}{' ...' if len(leaked) > 5 else ''}), "
                "so its nc1 prompts would not be held out. Retrain it (delete "
                f"{model_dir}), or remove these words from the file named by `toy.train_words` "
                "(or `models.<name>.finetune.train_words` for a fine-tuned model)."
            )
    return chosen


def nc1_prompts(prompts: pd.DataFrame) -> pd.DataFrame:
    return prompts[prompts["kind"] == "nc1"].reset_index(drop=True)


def run_title(job) -> str:
    return f"{job.wildcards.model} / {job.wildcards.dataset}"
