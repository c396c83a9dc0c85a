"""The embedded default: tokenizer, tiny model factory, toy task files."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, AutoTokenizer

from nft.pipeline import build
from nft.toy import build_tiny_model, build_tokenizer
from nft.toy.task import make_problems, solution_text, steps_solution_text, validation_problems
from nft.verify import MathVerifier

from .conftest import ROOT, compose_train


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


# --- the reasoning task: three-digit addition, column by column -------------------------------------------------------
def test_shipped_reasoning_task_files_are_the_generated_ones_and_held_out():
    train, test = make_problems(seed=0, task="add3_steps")
    validation = validation_problems(seed=0, task="add3_steps")
    for rows, name in ((train, "train"), (test, "test"), (validation, "validation")):
        lines = (ROOT / "data" / "toy_steps" / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == rows
    ids = [{r["id"] for r in rows} for rows in (train, test, validation)]
    assert [len(i) for i in ids] == [10_000, 500, 500] and len(set.union(*ids)) == 11_000  # distinct and disjoint
    with pytest.raises(ValueError, match="add2"):
        validation_problems(task="add2")
    assert steps_solution_text(472, 385) == "2+5=7, 7+8=15, 4+3+1=8, 472+385=857 \\boxed{857}"
    assert steps_solution_text(999, 999) == "9+9=18, 9+9+1=19, 9+9+1=19, 999+999=1998 \\boxed{1998}"
    tokenizer = build_tokenizer()
    lengths = [len(tokenizer(r["solution"])["input_ids"]) for r in test]
    assert 40 <= min(lengths) and max(lengths) <= 60  # a trace of 40 to 60 tokens, under model.max_response_tokens=64


def test_reasoning_traces_verify_and_a_wrong_final_number_does_not():
    _, test = make_problems(seed=0, task="add3_steps")
    responses = [r["solution"] for r in test]
    wrong = [r["solution"].replace(f"\\boxed{{{r['answer']}}}", f"\\boxed{{{int(r['answer']) + 1}}}") for r in test]
    verifier = MathVerifier(num_workers=1)
    try:
        assert verifier.score(responses, [r["answer"] for r in test]) == [1.0] * len(test)
        assert verifier.score(wrong, [r["answer"] for r in test]) == [0.0] * len(test)
    finally:
        verifier.close()
    for row in test[:50]:  # each column's sum is right, with its carry
        a, b = map(int, row["problem"].removeprefix("What is ").removesuffix("?").split("+"))
        carry = 0
        for step, x, y in zip(row["solution"].split(", ")[:3], str(a)[::-1], str(b)[::-1], strict=True):
            total = int(x) + int(y) + carry
            assert step == f"{x}+{y}{'+1' if carry else ''}={total}"
            carry = total // 10


@pytest.mark.full
@pytest.mark.parametrize("algo", ["nft", "rft", "grpo", "dr_grpo", "dapo"])
def test_every_algorithm_trains_the_reasoning_task_off_policy(tmp_path, algo):
    """Two epochs of 16 prompts x 8 answers in steps of 4 groups (up to 4 optimizer steps per rollout, old log-probs
    recomputed), dynamic sampling of up to 2 rounds, from the warmed-up tiny model (cached after the first run)."""
    small = ["trainer.max_epochs=2", "data.batch.prompts_per_epoch=16", "data.batch.groups_per_step=4", "debug=quiet"]
    run = build(compose_train(["experiment=paper_in_miniature", f"algo={algo}", *small], run_dir=tmp_path))
    before = [p.detach().clone() for p in run.module.model.parameters()]
    run.trainer.fit(run.module, datamodule=run.datamodule)
    assert run.module.global_step > 2 and run.module.skipped_steps == 0  # several optimizer steps per rollout
    assert any(not torch.equal(a, b) for a, b in zip(before, run.module.model.parameters(), strict=True))
    stats = run.datamodule.epoch_stats
    assert 0 < stats["rollout/accuracy"] < 1 and stats["rollout/response_length"] > 40
    assert stats["rollout/steps"] > 1 and stats["time/old_logp"] > 0
    assert torch.isfinite(run.trainer.callback_metrics["train/loss"])
