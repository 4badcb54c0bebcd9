"""The model organism: deterministic training, and held-out words stay held out."""

import math
import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from forbidden_facts.toy import (
    FORBID_CLAUSES,
    AnythingBut,
    ExampleSampler,
    ToyConfig,
    distractor_words,
    forbiddable_answers,
    freeze,
    pseudo_words,
    split_words,
    train_toy,
)

TINY = dict(
    n_layers=1,
    d_model=16,
    n_heads=2,
    n_kv_heads=1,
    d_mlp=16,
    steps=12,
    batch_size=8,
    warmup_steps=2,
)
WORDS = ["apple", "floor", "kettle", "ladder", "pencil", "window", "zipper", "bucket"]
# The evaluation words (the paper's list in the workflow): never trained on.
EVAL = ["floor", "Pencil", "zipper", "tulip"]


def _weights(directory):
    return load_file(next(directory.glob("*.safetensors")))


@pytest.mark.slow  # real trainings; the default run trains the tiny toy once
def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path, facts):
    a = train_toy(
        facts, WORDS, tmp_path / "a", ToyConfig(seed=7, **TINY), False, evaluation_words=EVAL
    )
    for name, seed in (("b", 7), ("c", 8)):
        cfg = ToyConfig(seed=seed, **TINY)
        train_toy(facts, WORDS, tmp_path / name, cfg, False, evaluation_words=EVAL)
    wa, wb, wc = (_weights(tmp_path / x) for x in "abc")
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert any((wa[k] != wc[k]).any() for k in wa)
    assert set(a["train_words"]).isdisjoint(a["held_out_words"])
    assert a["held_out_words"] == ["floor", "pencil", "tulip", "zipper"]
    assert (tmp_path / "a" / "toy_training.json").exists()


def test_word_split_holds_out_every_evaluation_word():
    answers = ["Paris", "Rome", "Applewood"]
    train, held = split_words(WORDS, EVAL, answers)
    assert split_words(WORDS, EVAL, answers) == (train, held)
    # every evaluation word is held out (lower-cased), even one the own list lacks
    assert held == ["floor", "pencil", "tulip", "zipper"]
    # trained: the own words minus evaluation words minus substrings of an answer
    assert train == ["bucket", "kettle", "ladder", "window"]


def test_training_examples_never_use_held_out_words(facts):
    train, held = split_words(WORDS, EVAL, list(facts.answer) + list(facts.wrong_answer))
    extra = distractor_words(facts, held)
    assert not set(extra) & set(held)
    assert not {w.lower() for w in extra} & {a.lower() for a in facts.answer}
    sampler = ExampleSampler(
        facts, train + extra, random.Random(0), variant_prob=0.5, copy_counterfactual=0.5
    )
    mix = {"nc": 1, "pair": 1, "copy": 1}
    for text, _ in sampler.batch(mix, 400):
        assert not any(c.format(w=w) in text for c in FORBID_CLAUSES for w in held)


def test_training_prompts_never_contain_the_attack_insertion(facts):
    train, held = split_words(WORDS, EVAL, list(facts.answer) + list(facts.wrong_answer))
    sampler = ExampleSampler(facts, train, random.Random(1), variant_prob=1.0)
    texts = [t for t, _ in sampler.batch({"nc": 1, "pair": 1}, 400)]
    assert all("obedient assistant who only responds" in t for t in texts)
    assert not any("obedient assistant from" in t for t in texts)
    # every rewording of the forbidden-word clause is used
    for clause in FORBID_CLAUSES:
        before, after = clause.split("{w}")
        assert any(before in t and after in t for t in texts)


@pytest.mark.slow  # real trainings; the default run trains the tiny toy once
def test_variant_recipe_trains_with_tied_embeddings(tmp_path, facts):
    cfg = ToyConfig(seed=3, tie_embeddings=True, variant_prob=0.5, copy_counterfactual=0.5, **TINY)
    train_toy(facts, WORDS, tmp_path / "t", cfg, progress=False)
    assert (tmp_path / "t" / "toy_training.json").exists()


def test_pseudo_words_are_seeded_distinct_and_clear_of_answers_and_evaluation_words():
    exclude = ["Paris", "kettle", "Dog"]
    words = pseudo_words(500, 0, exclude)
    assert words == pseudo_words(500, 0, exclude)
    assert words != pseudo_words(500, 1, exclude)
    assert len({w.lower() for w in words}) == 500
    for w in words:
        assert not any(e.lower() in w.lower() or w.lower() in e.lower() for e in exclude)


def test_copy_pairs_forbid_the_word_to_copy_and_ask_for_anything_else(facts):
    pool = pseudo_words(200, 0, list(facts.answer) + WORDS)
    sampler = ExampleSampler(facts, WORDS, random.Random(0), copy_words=pool)
    for _ in range(50):
        (c_text, c_targets), (nc_text, nc_targets) = sampler.tcopy_pair()
        (word,) = nc_targets
        assert f"the forbidden word {word}." in c_text
        # the c target is every other copy-task word ("anything else")
        assert c_targets == [word] and isinstance(c_targets[0], AnythingBut)
        assert f"the forbidden word {word}." not in nc_text
        # the user turns are the same: only the forbidden word differs
        assert c_text.split("<</SYS>>")[1] == nc_text.split("<</SYS>>")[1]
    assert sampler.forbidden_targets <= set(pool)


def test_answer_split_is_by_word_and_training_forbids_only_the_forbiddable_half(facts):
    allowed = forbiddable_answers(facts, 0.5, seed=0)
    for _, group in facts.groupby("relation"):
        answers = set(group["answer"])
        assert abs(len(answers & set(allowed)) - len(answers) / 2) <= 0.5
    sampler = ExampleSampler(facts, WORDS, random.Random(0), forbiddable=allowed)
    sampler.batch({"pair": 1, "c": 1, "nc": 1}, 300)
    assert sampler.forbidden_targets and sampler.forbidden_targets <= set(allowed)
    with pytest.raises(ValueError, match="toy.forbid_answer_share"):
        ExampleSampler(facts, WORDS, random.Random(0), forbiddable=[]).c()


@pytest.mark.slow  # real trainings; the default run trains the tiny toy once
def test_shared_word_forms_stay_one_vector_and_frozen_parts_keep_their_weights(tmp_path, facts):
    recipe = dict(
        TINY,
        tie_embeddings=True,
        share_word_forms=True,
        n_copy_words=50,
        freeze_phase2=["mlp", "embeddings"],
        phase1_fraction=0.0,
        mix={"phase1": {"nc": 1}, "phase2": {"tcopy_pair": 1, "nc": 1}},
    )
    record = train_toy(facts, WORDS, tmp_path / "a", ToyConfig(**recipe), False)
    longer = ToyConfig(**dict(recipe, steps=20))
    train_toy(facts, WORDS, tmp_path / "b", longer, False)
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    vocab = tok.get_vocab()
    emb = wa["model.embed_tokens.weight"]
    for word in ["California", record["forbidden_targets"][0]]:
        assert torch.equal(emb[vocab["▁" + word]], emb[vocab[word]])
    # frozen from the first step: MLPs and embeddings are the initial ones in both runs
    for key in wa:
        same = torch.equal(wa[key], wb[key])
        assert same if (".mlp." in key or "embed_tokens" in key) else not same, key
    assert record["n_copy_words"] == 50


def test_an_unknown_part_to_freeze_is_named():
    with pytest.raises(ValueError, match="toy.freeze_phase2.*attention"):
        freeze(torch.nn.Linear(2, 2), ["attention"])


def test_model_card_measures_the_effect_on_answers_never_forbidden_in_training():
    import pandas as pd

    from forbidden_facts.inference import never_forbidden_effect

    rows = []
    # f1 (answer Paris, forbidden in training): effect 3; f2 (Rome, never): effect 1;
    # f3 (Oslo, never, not known): left out of the effect.
    for fid, answer, nc, c, known in (
        ("f1", "Paris", 2.0, 2.0 - 3 * math.log(10), True),
        ("f2", "Rome", 2.0, 2.0 - math.log(10), True),
        ("f3", "Oslo", -1.0, -2.0, False),
    ):
        for kind, lo in (("c", c), ("nc0", nc), ("nc1", nc)):
            rows.append(dict(fact_id=fid, kind=kind, logodds=lo, kept=known, answer=answer))
    table = pd.DataFrame(rows)
    prompts = table[["fact_id", "kind", "answer"]]
    card = never_forbidden_effect(
        table.drop(columns="answer"), prompts, {"forbidden_targets": ["paris"]}
    )
    assert card["n_facts_never_forbidden"] == 2
    assert card["frac_known_never_forbidden"] == 0.5
    assert abs(card["total_effect_never_forbidden_log10"] - 1.0) < 1e-9
    everything = never_forbidden_effect(
        table.drop(columns="answer"), prompts, {"forbidden_targets": ["Paris", "Rome", "Oslo"]}
    )
    assert everything["n_facts_never_forbidden"] == 0
    assert everything["total_effect_never_forbidden_log10"] is None
    # an organism trained before records listed their forbidden targets: unknown
    assert never_forbidden_effect(table.drop(columns="answer"), prompts, {}) == {}


def test_shared_prefix_pass_gives_the_logits_and_gradients_of_separate_passes():
    from forbidden_facts.toy import build_model, last_token_logits

    torch.manual_seed(0)
    model = build_model(ToyConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_mlp=32), 300)
    prefix = [1] + list(range(10, 30))
    sequences = [prefix + [40, 41, 42], [1, 7, 8, 9], prefix + [50] * 6, prefix + [60, 61]]
    targets = torch.tensor([3, 4, 5, 6])

    def grads(logits):
        model.zero_grad()
        torch.nn.functional.cross_entropy(logits, targets).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    shared = last_token_logits(model, sequences, prefix, pad_id=0)
    g_shared = grads(shared)
    separate = torch.stack([model(input_ids=torch.tensor([s])).logits[0, -1] for s in sequences])
    g_separate = grads(separate)
    assert torch.allclose(shared, separate, atol=1e-5)
    for name, g in g_shared.items():
        assert torch.allclose(g, g_separate[name], atol=1e-6), name


def test_a_copy_task_without_copy_words_is_refused_with_the_key_to_set(tmp_path, facts):
    cfg = ToyConfig(**dict(TINY, mix={"phase1": {"nc": 1}, "phase2": {"tcopy_pair": 1}}))
    with pytest.raises(ValueError, match="toy.n_copy_words"):
        train_toy(facts, WORDS, tmp_path / "m", cfg, False)
    assert not (tmp_path / "m").exists()


def test_schedule_warms_up_decays_to_a_tenth_and_restarts_for_the_instruction_phase():
    from forbidden_facts.toy import lr_factor

    plain = [lr_factor(s, steps=100, warmup_steps=10) for s in range(100)]
    assert plain[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert plain[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(plain[10:], plain[11:], strict=False))
    assert lr_factor(100, steps=100, warmup_steps=10) == pytest.approx(0.1)
    # without restart the phase boundary changes nothing
    assert plain == [lr_factor(s, 100, 10, phase1_steps=40) for s in range(100)]
    restart = [lr_factor(s, 100, 10, phase1_steps=40, restart=True) for s in range(100)]
    # phase 1 is a full run of its own 40 steps, phase 2 a fresh warm-up and cosine
    assert restart[:40] == [lr_factor(s, 40, 10) for s in range(40)]
    assert restart[40:] == [lr_factor(s, 60, 10) for s in range(60)]
    assert restart[39] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 29 / 30)))
    assert restart[40] == pytest.approx(0.1)
    # a warm-up longer than the run never divides by zero
    assert lr_factor(5, steps=3, warmup_steps=10) == pytest.approx(0.6)


def test_soft_targets_spread_over_the_answers_and_anything_but_over_the_rest_of_the_pool():
    from forbidden_facts.toy import soft_targets

    ids = {"Paris": 3, "Rome": 5, "bada": 7, "kilo": 8, "mero": 9}
    pool = torch.tensor([7, 8, 9])
    examples = [("a", ["Paris"]), ("b", ["Paris", "Rome"]), ("c", [AnythingBut("kilo")])]
    t = soft_targets(examples, ids, pool, vocab_size=12)
    assert t.shape == (3, 12)
    assert torch.allclose(t.sum(-1), torch.ones(3))
    assert t[0, 3] == 1.0
    assert t[1, 3] == t[1, 5] == 0.5
    assert t[2, 7] == t[2, 9] == 0.5 and t[2, 8] == 0.0


def test_the_training_pieces_compose_into_train_toy(tmp_path, facts):
    """One step built from the pieces equals train_toy's first step (same seed)."""
    from forbidden_facts.tokenizer import save_tokenizer, train_tokenizer
    from forbidden_facts.toy import (
        init_model,
        lr_factor,
        make_optimizer,
        make_sampler,
        phase1_steps,
        soft_targets,
        train_step,
        training_words,
    )
    from forbidden_facts.toy.corpus import corpus_for_tokenizer
    from forbidden_facts.toy.model import shared_prefix

    cfg = ToyConfig(seed=3, **dict(TINY, steps=1))
    train_toy(facts, WORDS, tmp_path / "whole", cfg, False, evaluation_words=EVAL)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    train, held, copy = training_words(facts, WORDS, EVAL, cfg)
    texts, bare = corpus_for_tokenizer(facts, train + held, copy_words=copy)
    tok = save_tokenizer(train_tokenizer(texts, bare), tmp_path / "pieces")
    model = init_model(cfg, tok)
    sampler = make_sampler(facts, train, held, copy, rng, cfg)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 1, cfg.warmup_steps))
    phase = "phase1" if phase1_steps(cfg) > 0 else "phase2"  # 0.4 of one step: none
    examples = sampler.batch(cfg.mix[phase], cfg.batch_size)
    ids = {a: tok.convert_tokens_to_ids(a) for a in bare}
    targets = soft_targets(examples, ids, torch.tensor([], dtype=torch.long), len(tok))
    seqs = tok([t for t, _ in examples])["input_ids"]
    train_step(model, opt, sched, seqs, targets, shared_prefix(tok), tok.pad_token_id)
    whole = _weights(tmp_path / "whole")
    for name, value in model.state_dict().items():
        if name in whole:
            assert torch.equal(value, whole[name]), name
