"""Shared fixtures: tiny random Llama models (MHA and GQA) and a word-level tokenizer."""

from __future__ import annotations

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device for model tests (cpu or cuda)")


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if anything in a test tries to open a network connection."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("tests must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="session")
def device(request) -> str:
    dev = request.config.getoption("--device")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("--device cuda given but torch sees no CUDA device")
    return dev


def tiny_llama(n_kv_heads: int, seed: int = 0, vocab_size: int = 64, device: str = "cpu"):
    """A 2-layer random LlamaForCausalLM; n_kv_heads < 4 gives grouped-query attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg).to(device).eval()
    # Random init gives near-uniform logits; scale the unembedding so that
    # answers get non-trivial probabilities and log-odds differ between prompts.
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    return model


@pytest.fixture(scope="module", params=[4, 2], ids=["mha", "gqa"])
def model(request, device):
    return tiny_llama(request.param, device=device)


FACTS = [
    ("f0", "landmark", "The Golden Gate Bridge is in the state of", "California", "Florida"),
    ("f1", "landmark", "The Alamo is in the state of", "Texas", "Ohio"),
    ("f2", "capital", "The capital of France is", "Paris", "Rome"),
    ("f3", "capital", "The capital of Italy is", "Rome", "Paris"),
    ("f4", "landmark", "Disney World is in the state of", "Florida", "Texas"),
]
WORDS = ["apple", "floor", "kettle", "ladder", "pencil", "window"]


@pytest.fixture(scope="session")
def facts():
    import pandas as pd

    return pd.DataFrame(FACTS, columns=["fact_id", "relation", "prefix", "answer", "wrong_answer"])


@pytest.fixture(scope="session")
def tokenizer(facts):
    """The organism's real tokenizer, trained on the test facts."""
    from forbidden_facts.tokenizer import train_tokenizer, wrap_tokenizer
    from forbidden_facts.toy import corpus_for_tokenizer

    texts, bare = corpus_for_tokenizer(facts, WORDS)
    return wrap_tokenizer(train_tokenizer(texts + ["Ohio"], bare + ["Ohio"]))


@pytest.fixture(scope="session")
def prompts(facts):
    from forbidden_facts.prompts import assign_irrelevant_words, build_prompts

    return build_prompts(facts, assign_irrelevant_words(facts, WORDS))


@pytest.fixture(scope="module", params=[4, 2], ids=["mha", "gqa"])
def tok_model(request, tokenizer, device):
    """A random model over the test tokenizer's vocabulary (MHA and GQA)."""
    return tiny_llama(request.param, seed=1, vocab_size=len(tokenizer), device=device)
