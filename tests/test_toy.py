"""The model organism: deterministic training, and held-out words stay held out."""

import random

from safetensors.torch import load_file

from forbidden_facts.toy import (
    FORBID_CLAUSES,
    ExampleSampler,
    ToyConfig,
    distractor_words,
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


def test_variant_recipe_trains_with_tied_embeddings(tmp_path, facts):
    cfg = ToyConfig(seed=3, tie_embeddings=True, variant_prob=0.5, copy_counterfactual=0.5, **TINY)
    train_toy(facts, WORDS, tmp_path / "t", cfg, progress=False)
    assert (tmp_path / "t" / "toy_training.json").exists()
