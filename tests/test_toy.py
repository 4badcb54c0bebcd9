"""The model organism: deterministic training, and held-out words stay held out."""

import random

from safetensors.torch import load_file

from forbidden_facts.toy import ExampleSampler, ToyConfig, distractor_words, split_words, train_toy

TINY = dict(n_layers=1, d_model=16, n_heads=2, n_kv_heads=1, d_mlp=16, steps=12, batch_size=8, warmup_steps=2)
WORDS = ["apple", "floor", "kettle", "ladder", "pencil", "window", "zipper", "bucket"]


def _weights(directory):
    return load_file(next(directory.glob("*.safetensors")))


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path, facts):
    a = train_toy(facts, WORDS, tmp_path / "a", ToyConfig(seed=7, **TINY), progress=False)
    train_toy(facts, WORDS, tmp_path / "b", ToyConfig(seed=7, **TINY), progress=False)
    train_toy(facts, WORDS, tmp_path / "c", ToyConfig(seed=8, **TINY), progress=False)
    wa, wb, wc = (_weights(tmp_path / x) for x in "abc")
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert any((wa[k] != wc[k]).any() for k in wa)
    assert set(a["train_words"]).isdisjoint(a["held_out_words"])
    assert (tmp_path / "a" / "toy_training.json").exists()


def test_word_split_is_deterministic_and_spans_the_list():
    answers = ["Paris", "Rome"]
    train, held = split_words(WORDS, answers, 0.5)
    assert split_words(WORDS, answers, 0.5) == (train, held)
    assert len(train) == len(held) == 4 and set(train).isdisjoint(held)
    assert train[0] < held[-1] and held[0] < train[-1]


def test_training_examples_never_use_held_out_words(facts):
    train, held = split_words(WORDS, list(facts.answer) + list(facts.wrong_answer), 0.5)
    extra = distractor_words(facts, held)
    assert not set(extra) & set(held)
    assert not {w.lower() for w in extra} & {a.lower() for a in facts.answer}
    sampler = ExampleSampler(facts, train + extra, random.Random(0))
    mix = {"nc": 1, "pair": 1, "copy": 1}
    for text, _ in sampler.batch(mix, 400):
        assert not any(f"forbidden word {w}." in text for w in held)
