# Card stage: results/{model}/model_card.json, the model's architecture, recall and
# total effect on config `model_card_dataset`; for the organism also its training, the
# effect on answers it never saw forbidden, and its mechanism (heads, attack). It reads
# the last analyses, so it comes after them in the DAG and nothing upstream needs it.


rule model_card:
    input:
        unpack(get_model_card_tables),
        model=get_model_dir,
        inference=get_model_card_inference,
        mechanism=get_model_card_mechanism,
    output:
        "results/{model}/model_card.json",
    log:
        "logs/model_card/{model}.log",
    conda:
        "../../envs/torch.yaml"
    params:
        top_k=config["heads"]["top_k"],
    script:
        "../../scripts/model_card.py"
