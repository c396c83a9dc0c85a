"""The embedded default: tokenizer, tiny model factory, toy task files."""

from __future__ import annotations

import json

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from nft.toy import build_tiny_model, build_tokenizer
from nft.toy.task import make_problems, solution_text

from .conftest import ROOT


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_tokenizer_round_trips_arbitrary_text(text):
    tokenizer = build_tokenizer()
    # The NFC normaliser is part of the tokenizer, so NFC text is what comes back.
    import unicodedata

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)
    assert all(0 <= i < len(tokenizer) for i in ids)


def test_tokenizer_layout(tokenizer):
    assert len(tokenizer) == 260
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id) == (0, 3, None)
    assert tokenizer("What is 12+34?", add_special_tokens=False)["input_ids"] == [
        tokenizer.convert_tokens_to_ids(c) for c in "What\u0120is\u012012+34?"
    ]


def test_tiny_model_matches_the_workload_shape(tokenizer):
    model = build_tiny_model(tokenizer)
    assert sum(p.numel() for p in model.parameters()) == 1_018_496
    assert model.config.tie_word_embeddings and model.config.vocab_size == 260


def test_save_pretrained_round_trip(tmp_path, tokenizer, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded_tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    text = "What is 12+34?\n12+34=46 \\boxed{46}<|endoftext|> ünïcode ✓"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert loaded_tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    assert loaded_tokenizer.decode(ids) == text
    x = torch.tensor([ids])
    tiny_model.eval()
    torch.testing.assert_close(loaded(x).logits, tiny_model(x).logits)


def test_toy_task_is_seeded_and_split():
    train, test = make_problems(seed=0)
    train_again, test_again = make_problems(seed=0)
    assert (train, test) == (train_again, test_again)
    assert len(test) == 500 and len(train) == 90 * 90 - 500
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert make_problems(seed=1)[1] != test
    row = test[0]
    a, b = map(int, row["problem"].removeprefix("What is ").removesuffix("?").split("+"))
    assert row["answer"] == str(a + b) and row["solution"] == solution_text(a, b)
    assert row["solution"].endswith(f"\\boxed{{{a + b}}}")


def test_shipped_toy_files_are_the_generated_ones():
    train, test = make_problems(seed=0)
    for rows, name in ((train, "train"), (test, "test")):
        lines = (ROOT / "data" / "toy" / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == rows
