"""The columns of every parquet the workflow writes (see `forbidden_facts.artifacts`)."""

#: resources/datasets/{dataset}/facts.parquet (rule prepare_dataset).
FACT_COLUMNS = ("fact_id", "relation", "prefix", "answer", "wrong_answer")
#: results/{model}/{dataset}/prompts.parquet (rule prompts): one row per (fact, kind).
PROMPT_COLUMNS = (
    "fact_id",
    "kind",
    "relation",
    "prefix",
    "answer",
    "forbidden_word",
    "prompt",
    "add_special_tokens",
)
#: results/{model}/{dataset}/inference.parquet (rule inference): one row per prompt.
INFERENCE_COLUMNS = ("fact_id", "kind", "p_correct", "logodds", "top1_token", "top1_prob", "kept")
#: results/{model}/{dataset}/attribution.parquet (rules attribution, merge_attribution).
ATTRIBUTION_COLUMNS = ("fact_id", "pair", "direction", "component", "delta_logodds")
#: results/{model}/{dataset}/components.parquet (rule rank_components).
COMPONENT_COLUMNS = (
    "component",
    "layer",
    "head",
    "type",
    "mean_log10",
    "ci_low",
    "ci_high",
    "std_log10",
    "n_pairs",
    "mean_c_to_nc_log10",
    "rank",
    "role",
    "n_facts",
    "within_noise",
)
#: results/{model}/{dataset}/cumulative.parquet (rule cumulative_patching).
CURVE_COLUMNS = ("k", "component", "mean_log10", "q025_log10", "q975_log10", "sum_of_singles_log10")
#: results/{model}/{dataset}/heads.parquet (rule heads): one row per head.
HEAD_COLUMNS = (
    "component",
    "layer",
    "head",
    "rank",
    "ov_score",
    "attn_forbidden_c",
    "attn_forbidden_nc0",
    "attn_forbidden_nc1",
    "mean_log10",
)
#: results/{model}/{dataset}/attack_self_insertion.parquet: one row per (fact, variant).
ATTACK_COLUMNS = (
    "fact_id",
    "variant",
    "inserted",
    "p_before",
    "p_after",
    "top1_before",
    "top1_after",
    "logodds_before",
    "logodds_after",
    "delta_logodds_log10",
    "top1_correct_before",
    "top1_correct_after",
)
#: results/{model}/{dataset}/attack_attention.parquet (rule attack_self_insertion): every
#: head's attention from the last position onto the inserted word, one row per (fact,
#: variant, head) of attack_self_insertion.parquet.
ATTACK_ATTENTION_COLUMNS = ("fact_id", "variant", "component", "attention")
#: results/{model}/{dataset}/attack_tokens.parquet (rule attack_tokens).
TOKEN_SEARCH_COLUMNS = (
    "component",
    "fact_id",
    "token",
    "token_id",
    "attention",
    "delta_logodds_log10",
    "rank",
    "length_class",
    "neutral_token",
    "delta_vs_no_insertion_log10",
    "control_attention",
    "control_delta_logodds_log10",
    "control_neutral_token",
)
#: results/{model}/{dataset}/total_effects.parquet (rule faithfulness): one row per (fact,
#: pair, top component), nc -> c; direct = first-order (attribution), total = with every
#: later layer recomputed (forbidden_facts.faithfulness).
TOTAL_EFFECT_COLUMNS = ("fact_id", "pair", "component", "direct_log10", "total_log10")
#: results/{model}/{dataset}/faithfulness_curve.parquet (rule faithfulness): per k, the
#: top-k patched together (sufficiency) and all but the top-k (necessity) with
#: recomputation, mean over pairs and 95% t-interval over facts; the top-k component's
#: own total effect, the first-order cumulative curve and every component patched (log10,
#: nc -> c: negative = suppressive).
FAITHFULNESS_CURVE_COLUMNS = (
    "k",
    "component",
    "sufficiency_log10",
    "sufficiency_low",
    "sufficiency_high",
    "necessity_log10",
    "necessity_low",
    "necessity_high",
    "single_total_log10",
    "first_order_log10",
    "all_patched_log10",
)
#: results/{model}/{dataset}/attack_prediction.parquet (rule faithfulness): per attacked
#: fact, the top suppressor heads' attention on the inserted answer, their first-order
#: effect on the fact, the predictor (their product) and the attack's outcome.
ATTACK_PREDICTION_COLUMNS = (
    "fact_id",
    "attention_inserted",
    "heads_direct_log10",
    "predictor_log10",
    "delta_logodds_log10",
    "flipped",
)
