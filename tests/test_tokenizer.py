"""The organism's tokenizer behaves like Llama-2's where the metric depends on it."""

from transformers import AutoTokenizer

from forbidden_facts.metrics import VocabIndex
from forbidden_facts.prompts import format_prompt
from forbidden_facts.tokenizer import save_tokenizer, train_tokenizer
from forbidden_facts.toy import corpus_for_tokenizer


def test_trailing_space_is_a_lone_metaspace_token(tokenizer):
    ids = tokenizer(format_prompt("The Alamo is in the state of", "floor"))["input_ids"]
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert pieces[0] == "<s>"  # BOS added, like Llama
    assert pieces[-2:] == ["▁[/INST]", "▁"]
    assert "▁floor" in pieces and "." in pieces  # "floor." splits like Llama's


def test_answers_exist_with_and_without_the_space_marker(tokenizer, facts):
    vocab = VocabIndex(tokenizer)
    for answer in facts.answer:
        pieces = set(tokenizer.convert_ids_to_tokens(vocab.answer_ids(answer)))
        assert pieces == {answer, "▁" + answer}
        assert len(tokenizer(answer, add_special_tokens=False)["input_ids"]) == 1


def test_byte_fallback_and_round_trip(tokenizer):
    text = "Zürich\n[/INST] "
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "<0xC3>" in tokenizer.convert_ids_to_tokens(ids)  # ü falls back to UTF-8 bytes
    assert tokenizer.decode(ids) == text


def test_saved_tokenizer_loads_with_autotokenizer(tmp_path, facts):
    texts, bare = corpus_for_tokenizer(facts, ["floor"])
    tok = save_tokenizer(train_tokenizer(texts, bare), tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    prompt = format_prompt(facts.prefix[0], "floor")
    assert loaded(prompt)["input_ids"] == tok(prompt)["input_ids"]
    assert loaded.padding_side == "left" and loaded.bos_token == "<s>"
