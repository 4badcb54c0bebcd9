"""The fine-tune of a pretrained model on the competing objective (forbidden_facts/finetune/)."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import load_file

from forbidden_facts.finetune import (
    FINETUNE_RECORD,
    FinetuneConfig,
    RecipeError,
    Sampler,
    check_recipe,
    drop_trained,
    example_losses,
    finetune,
    read_finetune_record,
    train_answers,
    training_words,
)

from .conftest import WORDS, tiny_llama

EVALUATION_WORDS = ["floor", "window"]  # stand-ins for the paper's nc1 words


def test_unlikelihood_is_minus_log_one_minus_p_summed_over_equivalent_tokens():
    torch.manual_seed(0)
    logits = torch.randn(3, 11) * 3
    mask = torch.zeros(3, 11, dtype=torch.bool)
    mask[0, [2, 7]] = True  # "California" and "▁California": two tokens, one answer
    mask[1, [4]] = True
    mask[2, [0, 1, 9]] = True
    p = torch.softmax(logits.double(), dim=-1)
    p_answer = (p * mask).sum(-1)
    unlikely = example_losses(logits, mask, torch.tensor([True, True, True]))
    likely = example_losses(logits, mask, torch.tensor([False, False, False]))
    torch.testing.assert_close(unlikely.double(), -torch.log1p(-p_answer), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(likely.double(), -torch.log(p_answer), rtol=1e-5, atol=1e-6)


def test_unlikelihood_stays_finite_when_the_answer_holds_all_the_mass():
    logits = torch.tensor([[60.0, 0.0, 0.0]])
    mask = torch.tensor([[True, False, False]])
    loss = example_losses(logits, mask, torch.tensor([True]))
    assert torch.isfinite(loss).all() and loss.item() == pytest.approx(
        60 - torch.log(torch.tensor(2.0)).item(), rel=1e-4
    )


def test_answer_split_is_by_word_within_each_relation(facts):
    chosen = train_answers(facts, 0.5, seed=0)
    assert chosen == train_answers(facts, 0.5, seed=0)
    for _, group in facts.groupby("relation"):
        answers = set(group["answer"])
        assert 0 < len(answers & set(chosen)) < len(answers)


def test_no_held_out_answer_appears_in_any_training_prompt(facts):
    allowed = set(train_answers(facts, 0.5, seed=0))
    held_out = set(facts["answer"]) - allowed
    usable = facts[facts["answer"].isin(allowed)]
    by_rel = {r: sorted(set(g["answer"])) for r, g in usable.groupby("relation")}
    sampler = Sampler(usable, by_rel, ["kettle", "ladder"], [], random.Random(0))
    examples = sampler.batch({"c": 0.5, "nc0": 0.25, "nc1": 0.25}, 400)
    assert {e.kind for e in examples} == {"c", "nc0", "nc1"}
    held_prefixes = set(facts.loc[facts["answer"].isin(held_out), "prefix"])
    for ex in examples:
        assert ex.target not in held_out and ex.forbidden not in held_out
        assert ex.prefix not in held_prefixes


def test_training_words_never_include_the_papers_words():
    words = training_words(WORDS, EVALUATION_WORDS, ["California", "Texas"])
    assert set(words).isdisjoint(EVALUATION_WORDS) and "kettle" in words
    with pytest.raises(RecipeError, match="train_words"):
        training_words(EVALUATION_WORDS, EVALUATION_WORDS, ["California"])


def test_recipe_with_attention_layers_needs_them():
    with pytest.raises(RecipeError, match="layers"):
        check_recipe(FinetuneConfig(train="attention", layers=None))
    with pytest.raises(RecipeError, match="outside"):
        check_recipe(FinetuneConfig(train="attention", layers=[1, 5]), n_layers=2)
    with pytest.raises(RecipeError, match="n_copy_words"):
        check_recipe(FinetuneConfig(train="all", mix={"c": 1.0, "tcopy_c": 1.0}))


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer):
    out = tmp_path_factory.mktemp("base")
    tiny_llama(2, seed=3, vocab_size=len(tokenizer)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run(base_dir, facts, out, **recipe):
    cfg = FinetuneConfig(prompt_style="llama2", steps=3, batch_size=6, lr=1e-3, **recipe)
    return finetune(
        base_dir, facts, WORDS, EVALUATION_WORDS, out, cfg, "tiny", progress=False, threads=1
    )


def test_finetune_is_deterministic_for_a_seed_and_writes_its_record(base_dir, facts, tmp_path):
    a = run(base_dir, facts, tmp_path / "a", train="all", layers=None)
    b = run(base_dir, facts, tmp_path / "b", train="all", layers=None)
    wa, wb = (
        load_file(tmp_path / "a/model.safetensors"),
        load_file(tmp_path / "b/model.safetensors"),
    )
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["loss_curve"] == b["loss_curve"] and len(a["loss_curve"]) == 3
    record = read_finetune_record(tmp_path / "a")
    for key in (
        "trained_fact_ids",
        "target_answers",
        "forbidden_targets",
        "train_words",
        "train_seconds",
        "loss_curve",
        "config",
        "seed",
        "base_model",
    ):
        assert key in record
    assert (tmp_path / "a" / FINETUNE_RECORD).exists()
    assert set(record["train_words"]).isdisjoint(EVALUATION_WORDS)
    base = load_file(base_dir / "model.safetensors")
    assert any(not torch.equal(base[k], wa[k]) for k in wa)  # it did train


def test_attention_recipe_trains_only_the_chosen_layers_attention(base_dir, facts, tmp_path):
    run(base_dir, facts, tmp_path / "m", train="attention", layers=[1, 1])
    base = load_file(base_dir / "model.safetensors")
    tuned = load_file(tmp_path / "m/model.safetensors")
    changed = {k for k in tuned if not torch.equal(base[k], tuned[k])}
    assert changed and all(k.startswith("model.layers.1.self_attn.") for k in changed)


def test_analysis_never_sees_a_trained_fact_or_answer(base_dir, facts, tmp_path):
    record = run(base_dir, facts, tmp_path / "m", train="all", layers=None)
    kept, summary = drop_trained(facts, [record])
    taught = {w.lower() for w in record["target_answers"] + record["forbidden_targets"]}
    assert not kept["answer"].str.lower().isin(taught).any()
    assert not kept["fact_id"].isin(record["trained_fact_ids"]).any()
    assert summary["n_excluded_trained"] == len(facts) - len(kept) > 0
    assert sum(summary["excluded_by_reason"].values()) == summary["n_excluded_trained"]
    untouched, none = drop_trained(facts, [])
    assert len(untouched) == len(facts) and none["n_excluded_trained"] == 0


def test_a_fact_in_a_training_prompt_is_dropped_even_with_a_fresh_answer(facts):
    record = {"target_answers": [], "forbidden_targets": [], "trained_fact_ids": ["f2"]}
    kept, summary = drop_trained(facts, [record])
    assert "f2" not in set(kept["fact_id"]) and summary["excluded_by_reason"] == {"fact_trained": 1}
    record = {"target_answers": ["paris"], "forbidden_targets": [], "trained_fact_ids": []}
    kept, summary = drop_trained(facts, [record])
    assert "f2" not in set(kept["fact_id"]) and summary["excluded_by_reason"] == {
        "answer_trained": 1
    }


def test_evaluation_words_refuse_a_finetune_trained_on_them(tmp_path):
    from forbidden_facts.datasets import DatasetError
    from forbidden_facts.steps.common import evaluation_words

    words = tmp_path / "words.txt"
    words.write_text("floor\nwindow\n")
    model = tmp_path / "model"
    model.mkdir()
    (model / FINETUNE_RECORD).write_text('{"train_words": ["kettle", "floor"]}')
    with pytest.raises(DatasetError, match="floor"):
        evaluation_words(words, model)
    (model / FINETUNE_RECORD).write_text('{"train_words": ["kettle"]}')
    assert evaluation_words(words, model) == ["floor", "window"]


def test_a_finetuned_folder_names_its_base_and_its_weights(base_dir, facts, tmp_path):
    from forbidden_facts import io
    from forbidden_facts.provenance import model_provenance

    out = tmp_path / "m"
    run(base_dir, facts, out, train="all", layers=None)
    io.write_json(
        out / "provenance.json", {"source": "finetune", "base_model_id": "tiny-x", "seed": 0}
    )
    prov = model_provenance(out)
    assert prov["model_id"] == "tiny-x fine-tuned (seed 0)"
    assert prov["model_revision"].startswith("sha256:") and len(prov["model_revision"]) == 23


def test_exclusions_add_up_along_a_chain_of_fine_tunes(facts):
    """A fine-tune of a fine-tune carries both trainings' facts: neither may be analysed."""
    base = {"target_answers": ["rome"], "forbidden_targets": [], "trained_fact_ids": []}
    child = {"target_answers": [], "forbidden_targets": [], "trained_fact_ids": ["f2"]}
    alone, _ = drop_trained(facts, [child])
    kept, summary = drop_trained(facts, [child, base])
    assert (kept["answer"].str.lower() != "rome").all() and "f2" not in set(kept["fact_id"])
    assert summary["n_excluded_trained"] > len(facts) - len(alone)


def _finetuned_folder(base_dir, facts, out):
    """A fine-tune's folder as the fine-tune step leaves it: weights, record, provenance."""
    from forbidden_facts.finetune import FINETUNE_RECORD, RECORD_SHA256
    from forbidden_facts.io import write_json
    from forbidden_facts.provenance import sha256_file

    run(base_dir, facts, out, train="all", layers=None)
    write_json(
        out / "provenance.json",
        {"source": "finetune", RECORD_SHA256: sha256_file(out / FINETUNE_RECORD)},
    )
    return out


@pytest.mark.parametrize("damage", ["deleted", "emptied", "truncated", "provenance_lost"])
def test_a_damaged_record_is_refused_naming_the_file_and_the_fix(base_dir, facts, tmp_path, damage):
    import json

    from forbidden_facts.finetune import (
        FINETUNE_RECORD,
        FinetuneRecordError,
        finetune_chain,
        trained_records,
    )

    folder = _finetuned_folder(base_dir, facts, tmp_path / "tuned")
    assert len(trained_records([folder])) == 1  # intact: read
    path = folder / FINETUNE_RECORD
    if damage == "deleted":
        path.unlink()
    elif damage == "emptied":
        record = json.loads(path.read_text())
        record.update(target_answers=[], forbidden_targets=[], trained_fact_ids=[])
        path.write_text(json.dumps(record, indent=2) + "\n")
    elif damage == "truncated":
        path.write_text(path.read_text()[:100])
    else:
        (folder / "provenance.json").unlink()
    with pytest.raises(FinetuneRecordError) as err:
        trained_records([folder])
    text = str(err.value)
    assert str(folder) in text and f"Delete {folder}" in text
    assert (FINETUNE_RECORD if damage != "provenance_lost" else "provenance.json") in text
    if damage != "provenance_lost":
        # Found from the folders alone too (a step run by hand): the folder still says
        # it was fine-tuned, so the damaged record is refused, not skipped.
        with pytest.raises(FinetuneRecordError):
            trained_records(finetune_chain(folder))


def test_a_chain_is_found_from_the_folders_by_their_records(base_dir, facts, tmp_path):
    import json

    from forbidden_facts.finetune import FINETUNE_RECORD, RECORD_SHA256, finetune_chain
    from forbidden_facts.provenance import sha256_file

    first = _finetuned_folder(base_dir, facts, tmp_path / "first")
    second = _finetuned_folder(first, facts, tmp_path / "second")
    assert json.loads((second / FINETUNE_RECORD).read_text())["base_dir"] == str(first)
    assert finetune_chain(second) == [second, first]
    assert finetune_chain(base_dir) == []
    prov = json.loads((second / "provenance.json").read_text())
    assert prov[RECORD_SHA256] == sha256_file(second / FINETUNE_RECORD)


def test_only_the_paper_words_that_decide_a_finetune_are_its_params():
    # Issue 30, defect 5: a word added to data/paper_words.csv that the fine-tune neither
    # trains on nor avoids retrained it (42 jobs). Its params hold the words that count.
    from pathlib import Path

    from forbidden_facts.datasets import load_facts, read_words
    from forbidden_facts.finetune.data import copy_pseudo_words, training_words
    from forbidden_facts.heldout import finetune_evaluation_words

    root = Path(__file__).resolve().parents[1]
    facts = load_facts(root / "data/facts/curated.csv")
    answers = list(facts["answer"]) + list(facts["wrong_answer"])
    own = read_words(root / "data/irrelevant_words.txt")
    paper = read_words(root / "data/paper_words.csv")
    used = finetune_evaluation_words(own, paper, answers, 3000, 0)
    assert 0 < len(used) < len(paper)
    # Given only these, the fine-tune draws exactly the same training words and copy words.
    for n_copy in (0, 3000):
        full = training_words(own, paper, answers)
        assert training_words(own, used, answers) == full
        assert copy_pseudo_words(n_copy, 0, answers + used + full) == copy_pseudo_words(
            n_copy, 0, answers + list(paper) + full
        )
    # A new paper word that neither list touches changes nothing; one of its own words does.
    assert finetune_evaluation_words(own, [*paper, "Zqxjv"], answers, 3000, 0) == used
    mine = next(w for w in training_words(own, paper, answers) if w not in used)
    assert mine in finetune_evaluation_words(own, [*paper, mine], answers, 3000, 0)
