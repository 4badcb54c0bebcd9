"""The keys of every summary JSON the workflow writes (see `forbidden_facts.artifacts`)."""

from __future__ import annotations

from .keys import Artifact, Key


class Provenance(Artifact):
    """The ``provenance`` of every artifact (`forbidden_facts.provenance.stamp`)."""

    model_id = Key("model_id", optional=True)
    model_revision = Key("model_revision", optional=True)
    dataset_sha = Key("dataset_sha256", optional=True)
    code_version = Key("code_version", optional=True)
    created = Key("created", number=False, optional=True)


class Download(Artifact):
    """resources/datasets/{dataset}/download.json (rule download_dataset)."""

    PATH = "resources/datasets/{dataset}/download.json"
    url = Key("url", number=False)
    sha256 = Key("sha256", number=False)
    bytes = Key("bytes", number=False)


class FactsReport(Artifact):
    """resources/datasets/{dataset}/facts_report.json (rule prepare_dataset)."""

    PATH = "resources/datasets/{dataset}/facts_report.json"
    dataset = Key("dataset", number=False)
    skipped = Key("skipped", number=False)
    source = Key("source", number=False)
    sha256 = Key("sha256", number=False)
    n_facts = Key("n_facts", number=False)
    n_skipped = Key("n_skipped", number=False)


class Prompts(Artifact):
    """results/{model}/{dataset}/prompts_summary.json (rule prompts)."""

    PATH = "results/{model}/{dataset}/prompts_summary.json"
    prompt_style = Key("prompt_style", number=False)
    model_max_facts = Key("model_max_facts", number=False)
    n_facts_in = Key("n_facts_in", number=False)
    n_facts = Key("n_facts", number=False)
    n_dropped = Key("n_dropped", number=False)
    dropped_by_reason = Key("dropped_by_reason", number=False)
    n_prompts = Key("n_prompts", number=False)
    n_irrelevant_words = Key("n_irrelevant_words", number=False)
    warnings = Key("warnings", number=False)
    # Facts a fine-tuned model saw in training (forbidden_facts.finetune.drop_trained),
    # dropped before everything else; 0 and {} for every other model.
    n_excluded_trained = Key("n_excluded_trained", number=False, optional=True)
    excluded_by_reason = Key("excluded_by_reason", number=False, optional=True)
    # The fine-tuned folders whose records were checked and applied (the model's own and
    # its fine-tuned bases', nearest first), each with its record's sha256; [] otherwise.
    finetune_chain = Key("finetune_chain", number=False, optional=True)
    # nc0 prompts whose forbidden word a fine-tune in the chain taught (as an answer or a
    # forbidden word), out of n_nc0.
    n_nc0_taught_word = Key("n_nc0_forbidding_taught_word", number=False, optional=True)
    n_nc0 = Key("n_nc0", number=False, optional=True)


class Inference(Artifact):
    """results/{model}/{dataset}/inference_summary.json (rule inference)."""

    PATH = "results/{model}/{dataset}/inference_summary.json"
    model = Key("model", number=False)
    dataset = Key("dataset", number=False)
    n_facts = Key("n_facts")
    n_kept = Key("n_kept")
    # The total effect as the paper states it comes from `Attribution` (the same value,
    # with its interval over facts).
    frac_known = Key("frac_known")
    total_effect = Key("total_effect_log10", number=False)
    total_effect_std = Key("total_effect_std_log10")
    warnings = Key("warnings", number=False)
    by_relation = Key("by_relation", number=False)


class Attribution(Artifact):
    """results/{model}/{dataset}/summary.json (rule cumulative_patching).

    Built by `forbidden_facts.identification.attribution_summary`.
    """

    PATH = "results/{model}/{dataset}/summary.json"
    model_name = Key("model")
    dataset_name = Key("dataset")
    n_kept_patched = Key("n_kept", number=False)  # the facts patched: inference's kept facts
    n_pairs = Key("n_pairs")
    n_components = Key("n_components")
    total_effect = Key("total_effect_log10")
    ci_unit = Key("ci_unit", number=False)
    total_effect_ci = Key("total_effect_ci", number=False)
    total_effect_low = Key("total_effect_ci", 0)
    total_effect_high = Key("total_effect_ci", 1)
    # The model suppresses the forbidden answer: the total effect's interval lies above 0.
    suppresses = Key("suppresses")
    total_effect_positive = Key("total_effect_positive")
    noise_tolerance = Key("noise_tolerance_log10", number=False)
    n_star = Key("n_star")
    n_star_heads = Key("n_star_heads")
    n_star_mlps = Key("n_star_mlps")
    n_star_embed = Key("n_star_embed", number=False)
    n_star_ci = Key("n_star_ci", number=False)
    n_star_ci_low = Key("n_star_ci", 0)
    n_star_ci_high = Key("n_star_ci", 1)
    n_star_ci_share_found = Key("n_star_ci_share_found", number=False)
    n_star_frac = Key("n_star_frac")
    n_star_degenerate = Key("n_star_degenerate")
    n_star_reason = Key("n_star_degenerate_reason")
    max_overshoot = Key("max_overshoot_log10")
    k_fifty = Key("k50")
    k_eighty = Key("k80")
    k_ninety = Key("k90")
    k_ninety_five = Key("k95")
    k_ninety_frac = Key("k90_frac")
    top_component = Key("top_component")
    top_component_mean = Key("top_component_mean_log10")
    n_suppressive = Key("n_suppressive_significant")
    n_promotive = Key("n_promotive_significant")
    n_positive = Key("n_positive_mean")
    n_noise = Key("n_noise")
    promotive_sum = Key("promotive_sum_log10")
    positive_sum = Key("positive_sum_log10")
    top_promotive_list = Key("top_promotive", number=False)
    top_promotive = Key("top_promotive", 0)
    head_share = Key("head_share")
    curve_k_max = Key("curve_k_max", number=False)
    # The per-pair ("dynamic") order (config identification.dynamic_order); the k-shares of
    # its curve are the fixed order's keys with the suffix "_dynamic" (k90_dynamic, ...).
    # Optional: summaries of runs without it (and older ones) lack both keys.
    dynamic_order = Key("dynamic_order", number=False, optional=True)
    n_star_dynamic = Key("n_star_dynamic", optional=True)


class AttackExample(Artifact):
    """The ``example`` of attack_summary.json: the strongest self-insertion."""

    fact_id = Key("fact_id", number=False)
    prefix = Key("prefix", number=False)
    answer = Key("answer", number=False)
    forbidden_word = Key("forbidden_word", number=False)
    inserted = Key("inserted", number=False)
    prompt_before = Key("prompt_before", number=False)
    prompt_after = Key("prompt_after", number=False)
    p_before = Key("p_before", number=False)
    p_after = Key("p_after", number=False)
    delta = Key("delta_logodds_log10", number=False)
    top5_before = Key("top5_before", number=False)
    top5_after = Key("top5_after", number=False)


class AttackContrast(Artifact):
    """Attack minus control over facts (`forbidden_facts.effects.attack_contrast`).

    Written into attack_summary.json and read by the tables; one sign convention:
    negative means the attack lowers the answer more than the control.
    """

    attack_minus_control = Key("attack_minus_control_log10")
    attack_minus_control_low = Key("attack_minus_control_low_log10")
    attack_minus_control_high = Key("attack_minus_control_high_log10")
    # The attack claim: the interval lies below 0.
    attack_claim = Key("attack_beats_control")


class Attack(AttackContrast):
    """results/{model}/{dataset}/attack_summary.json (rule attack_self_insertion)."""

    PATH = "results/{model}/{dataset}/attack_summary.json"
    model = Key("model", number=False)
    dataset = Key("dataset", number=False)
    attack_n_facts = Key("n_facts")
    slot = Key("slot", number=False)
    attack_flipped = Key("frac_top1_flipped")
    attack_delta = Key("mean_delta_logodds_log10")
    control_flipped = Key("control_frac_top1_flipped")
    control_delta = Key("control_mean_delta_logodds_log10")
    # Kept for readers of older files: the opposite sign of attack_minus_control.
    control_minus_attack = Key("control_minus_attack_log10", number=False)
    # One sentence from `forbidden_facts.effects.attack_verdict`, the same claim as the paper's.
    verdict = Key("verdict", number=False, optional=True)
    example = Key("example", number=False)
    example_fact = Key("example", AttackExample.fact_id)
    example_prefix = Key("example", AttackExample.prefix)
    example_answer = Key("example", AttackExample.answer)
    example_forbidden = Key("example", AttackExample.forbidden_word)
    example_inserted = Key("example", AttackExample.inserted)
    example_p_before = Key("example", AttackExample.p_before)
    example_p_after = Key("example", AttackExample.p_after)
    example_delta = Key("example", AttackExample.delta)
    example_top_before = Key("example", AttackExample.top5_before, 0, "token")
    example_top_after = Key("example", AttackExample.top5_after, 0, "token")


class HeadGroups(Artifact):
    """The top-k suppressor heads against the rest (`forbidden_facts.effects.head_groups`).

    Each group's mean comes with a 95% t-interval over its heads. The OV claim holds
    when the top heads' interval lies below the rest's, the attention claim when it
    lies above.
    """

    top_heads_k = Key("top_heads_k")
    n_top_heads = Key("n_top_heads")
    n_other_heads = Key("n_other_heads")
    top_head = Key("top_head")
    top_head_ov = Key("top_head_ov")
    top_head_attn = Key("top_head_attn")
    top_heads_ov = Key("top_heads_ov")
    top_heads_ov_low = Key("top_heads_ov_low")
    top_heads_ov_high = Key("top_heads_ov_high")
    top_heads_attn = Key("top_heads_attn")
    top_heads_attn_low = Key("top_heads_attn_low")
    top_heads_attn_high = Key("top_heads_attn_high")
    top_heads_attn_nc0 = Key("top_heads_attn_nc0")
    top_heads_attn_nc1 = Key("top_heads_attn_nc1")
    other_heads_ov = Key("other_heads_ov")
    other_heads_ov_low = Key("other_heads_ov_low")
    other_heads_ov_high = Key("other_heads_ov_high")
    other_heads_attn = Key("other_heads_attn")
    other_heads_attn_low = Key("other_heads_attn_low")
    other_heads_attn_high = Key("other_heads_attn_high")
    other_heads_attn_nc0 = Key("other_heads_attn_nc0")
    other_heads_attn_nc1 = Key("other_heads_attn_nc1")
    ov_contrast = Key("ov_contrast")
    attn_ratio = Key("attn_ratio")
    ov_claim = Key("ov_claim")
    attn_claim = Key("attn_claim")


class Mechanism(Artifact):
    """The ``mechanism`` of the organism's model card (docs/organism.md § Targets).

    The ``top10_*`` keys keep their text for older readers; they hold the top
    config `heads.top_k` heads.
    """

    n_components = Key("n_components", number=False)
    head_share = Key("head_share_of_suppression", number=False)
    n_promotive = Key("n_promotive_significant", number=False)
    n_star = Key("n_star", number=False)
    n_star_frac = Key("n_star_frac", number=False)
    n_star_degenerate = Key("n_star_degenerate", number=False)
    k_ninety = Key("k90", number=False)
    k_ninety_frac = Key("k90_frac", number=False)
    top_heads_ov = Key("top10_heads_ov_score", number=False)
    other_heads_ov = Key("other_heads_ov_score", number=False)
    top_heads_attn = Key("top10_heads_attn_forbidden_c", number=False)
    other_heads_attn = Key("other_heads_attn_forbidden_c", number=False)
    attack_minus_control = Key("attack_minus_control_log10", number=False)


class Card(Artifact):
    """results/{model}/model_card.json (rule model_card, after every analysis)."""

    PATH = "results/{model}/model_card.json"
    model = Key("model", number=False)
    # The architecture (Hugging Face ``model_type``); absent from cards made before it.
    model_type = Key("model_type", optional=True)
    n_params = Key("n_params")
    n_layers = Key("n_layers")
    n_heads = Key("n_heads")
    n_kv_heads = Key("n_kv_heads", number=False)
    d_model = Key("d_model", number=False)
    vocab_size = Key("vocab_size", number=False)
    dataset = Key("dataset", number=False)
    frac_known = Key("frac_known", number=False)
    n_facts = Key("n_facts", number=False)
    n_kept = Key("n_kept", number=False)
    total_effect = Key("total_effect_log10", number=False)
    # The organism only (a trained model): its training and the effect on facts whose
    # answer was never a forbidden target in training (`identification.never_forbidden_effect`).
    train_seconds = Key("train_seconds", number=False, optional=True)
    seed = Key("seed", number=False, optional=True)
    n_train_words = Key("n_train_words", number=False, optional=True)
    n_held_out_words = Key("n_held_out_words", number=False, optional=True)
    n_never_forbidden = Key("n_facts_never_forbidden", optional=True)
    never_forbidden_known = Key("frac_known_never_forbidden", optional=True)
    never_forbidden_effect = Key("total_effect_never_forbidden_log10", optional=True)
    mechanism = Key("mechanism", number=False, optional=True)
    # A fine-tuned model only (source `finetune`, steps.card.finetune_card): its recipe and
    # training, the facts the prompts step excluded, and the effect on the never-taught
    # facts it is analysed on (equal to `total_effect_log10`).
    finetune = Key("finetune", number=False, optional=True)
    finetune_base = Key("finetune", "base_model", optional=True)
    finetune_seconds = Key("finetune", "train_seconds", optional=True)
    finetune_seconds_per_step = Key("finetune", "seconds_per_step", optional=True)
    n_excluded_trained = Key("finetune", "n_excluded_trained", optional=True)
    n_never_taught = Key("finetune", "n_facts_never_taught", optional=True)
    n_kept_never_taught = Key("finetune", "n_kept_never_taught", optional=True)
    never_taught_effect = Key("finetune", "total_effect_never_taught_log10", optional=True)


class ComponentShift(Artifact):
    """results/{model}/{dataset}/component_shift.json (rule component_shift): a derived
    model against its base on the derived model's kept facts.

    Written by `forbidden_facts.steps.shift.component_shift` (the counts by
    `forbidden_facts.shift.shift_summary`), read by paper/templates/component_shift.tex.j2.
    """

    PATH = "results/{model}/{dataset}/component_shift.json"
    model_name = Key("model", number=False)
    dataset_name = Key("dataset", number=False)
    base_model = Key("base_model", number=False)
    n_components = Key("n_components", number=False)
    n_facts = Key("n_facts", number=False)
    n_role_changed = Key("n_role_changed", number=False)
    role_changes = Key("role_changes", number=False)
    n_change_significant = Key("n_change_significant", number=False)
    role_changed_components = Key("role_changed_components", number=False)
    total_effect_before_log10 = Key("total_effect_before_log10", number=False)
    total_effect_before_ci = Key("total_effect_before_ci", number=False)
    total_effect_after_log10 = Key("total_effect_after_log10", number=False)
    total_effect_after_ci = Key("total_effect_after_ci", number=False)
    n_kept_by_base = Key("n_kept_by_base", number=False)
    noise_tolerance_before_log10 = Key("noise_tolerance_before_log10", number=False)
    noise_tolerance_after_log10 = Key("noise_tolerance_after_log10", number=False)
    ci_unit = Key("ci_unit", number=False)


class Faithfulness(Artifact):
    """results/{model}/{dataset}/faithfulness.json (rule faithfulness): patching with
    recomputation of the top components (docs/science.md § Faithfulness).

    Written by `forbidden_facts.steps.faithfulness.faithfulness` (the numbers by
    `forbidden_facts.faithfulness.faithfulness_summary`). Shares are of the total effect
    (every component patched, nc -> c), with 95% bootstrap intervals over facts.
    """

    PATH = "results/{model}/{dataset}/faithfulness.json"
    faith_model = Key("model", number=False)
    faith_dataset = Key("dataset", number=False)
    n_facts = Key("n_facts", number=False)
    n_pairs = Key("n_pairs", number=False)
    top_k = Key("top_k", number=False)
    n_star = Key("n_star", number=False)
    total_effect = Key("total_effect_log10", number=False)
    all_components_error = Key("all_components_error_log10", number=False)
    recomputed_share = Key("recomputed_share_at_n_star")
    recomputed_share_ci = Key("recomputed_share_ci", number=False)
    recomputed_share_low = Key("recomputed_share_ci", 0)
    recomputed_share_high = Key("recomputed_share_ci", 1)
    complement_share = Key("complement_share_at_n_star")
    complement_share_ci = Key("complement_share_ci", number=False)
    complement_share_low = Key("complement_share_ci", 0)
    complement_share_high = Key("complement_share_ci", 1)
    k90_recomputed = Key("k90_recomputed")
    spearman_direct_total = Key("spearman_direct_total")
    # Components whose total effect differs from their direct one beyond its interval
    # over facts, largest difference first: component, direct_log10, total_log10,
    # difference_log10, ci.
    differing = Key("differing_components", number=False)
    n_differing = Key("n_differing_components")
    first_differing = Key("differing_components", 0, "component")
    faith_top_component = Key("top_component", number=False)
    top_direct = Key("top_component_direct_log10")
    top_total = Key("top_component_total_log10")
    # When does the self-insertion attack work (docs/science.md § Faithfulness)?
    attack_heads = Key("attack_heads", number=False)
    prediction_n_facts = Key("attack_n_facts", number=False)
    attack_n_flipped = Key("attack_n_flipped")
    attack_spearman = Key("attack_spearman")
    attack_spearman_ci = Key("attack_spearman_ci", number=False)
    attack_spearman_low = Key("attack_spearman_ci", 0)
    attack_spearman_high = Key("attack_spearman_ci", 1)
    attack_auc = Key("attack_auc")


class Reference(Artifact):
    """One model of config/paper_reference.yaml: the paper's published numbers.

    Its names are the runs' names, so a table puts ours and the paper's side by side.
    """

    PATH = "config/paper_reference.yaml"
    model_name = Key("label", optional=True)
    repo_id = Key("repo_id", number=False, optional=True)
    model_type = Key("model_type", optional=True)
    n_facts = Key("n_facts", optional=True)
    n_kept = Key("n_kept", optional=True)
    total_effect = Key("total_effect_log10", optional=True)
    total_effect_std = Key("total_effect_std_log10", optional=True)
    n_components = Key("n_components", optional=True)
    n_star = Key("n_star", optional=True)
    n_star_heads = Key("n_star_heads", optional=True)
    n_star_mlps = Key("n_star_mlps", optional=True)
    k_ninety = Key("k90", optional=True)
    top_component = Key("top_component", optional=True)
    top_component_mean = Key("top_component_mean_log10", optional=True)
    head_share = Key("head_share", optional=True)
    top_heads_k = Key("top_heads_k", optional=True)
    top_head = Key("top_head", optional=True)
    top_head_ov = Key("top_head_ov_score", optional=True)
    top_heads_ov = Key("top_heads_ov_score", optional=True)
    other_heads_ov = Key("other_heads_ov_score", optional=True)
    top_heads_attn = Key("top_heads_attn_forbidden_c", optional=True)
    other_heads_attn = Key("other_heads_attn_forbidden_c", optional=True)
    attack_minus_control = Key("attack_minus_control_log10", optional=True)
    attack_example = Key("attack_example", number=False, optional=True)
    example_answer = Key("attack_example", "answer", optional=True)
    example_forbidden = Key("attack_example", "forbidden_word", optional=True)
    example_inserted = Key("attack_example", "inserted", optional=True)
    example_p_before = Key("attack_example", "p_before", optional=True)
    example_p_after = Key("attack_example", "p_after", optional=True)
    example_top_after = Key("attack_example", "top1_after", optional=True)


#: The artifacts whose numbers make up one run's numbers (`forbidden_facts.tables`);
#: their number names are distinct, so each names one macro.
RUN_NUMBERS = (Provenance, Inference, Attribution, Attack, HeadGroups, Card)


def number_names(artifacts=RUN_NUMBERS) -> list[str]:
    """Every number name of a run, in declaration order (each one macro)."""
    return [n for a in artifacts for n, k in a.keys().items() if k.number]
