"""``evaluate(cfg)`` and ``src/evaluate.py`` on saved tiny models: records, the table, resumption, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from statistics import mean

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from nft.eval.metrics import majority_is_correct, pass_at_k
from nft.pipeline import evaluate, train
from nft.toy import build_tiny_model, build_tokenizer
from nft.verify import grade, last_boxed

from .conftest import CONF, ROOT, compose_train

CUSTOM = (12, 23, 34, 45, 56)  # the user's file: "What is a+(a+11)?"
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # as conftest limits this process: the suite shares 2 cores


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """The warmed-up tiny policy and an untrained one, each written by ``save_pretrained``."""
    folder = tmp_path_factory.mktemp("models")
    warmed = instantiate(compose_train([]).model)
    warmed.model.save_pretrained(folder / "warmed")
    warmed.tokenizer.save_pretrained(folder / "warmed")
    tokenizer = build_tokenizer()
    build_tiny_model(tokenizer, num_hidden_layers=2, seed=1).save_pretrained(folder / "untrained")
    tokenizer.save_pretrained(folder / "untrained")
    return folder


@pytest.fixture
def custom_file(tmp_path):
    """Five toy problems in a user's file with its own column names."""
    path = tmp_path / "mine.jsonl"
    rows = [{"key": f"m{a}", "question": f"What is {a}+{a + 11}?", "final": str(2 * a + 11)} for a in CUSTOM]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def compose_evaluate(overrides: list[str], eval_dir) -> object:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=[*overrides, f"eval.dir={eval_dir}"])
    with open_dict(cfg):
        cfg.run_dir = str(eval_dir)
    return cfg


def read_records(path) -> list[dict]:
    lines = path.read_text().splitlines()
    assert "protocol" in json.loads(lines[0])
    return [json.loads(line) for line in lines[1:]]


def check_records(records, answers: dict[str, str], samples: int, max_new_tokens: int, tokenizer) -> None:
    """One record per (problem, sample); each field agrees with the response it holds."""
    assert sorted((r["problem_id"], r["sample"]) for r in records) == sorted(
        (problem_id, s) for problem_id in answers for s in range(samples)
    )
    for r in records:
        assert r["answer"] == answers[r["problem_id"]]
        assert r["extracted"] == last_boxed(r["response"])
        assert r["correct"] == grade(r["response"], r["answer"], strict=True)
        tokens = len(tokenizer(r["response"], add_special_tokens=False)["input_ids"])
        if r["finish_reason"] == "stop":  # the stop token is counted but not decoded
            assert r["length"] == tokens + 1 <= max_new_tokens
        else:
            assert r["finish_reason"] == "length" and r["length"] == tokens == max_new_tokens


def table_cells(path) -> dict[str, dict[str, str]]:
    """model -> column title -> cell, from the Markdown table."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ") and ":---" not in line]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    return {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in rows}


def test_evaluate_writes_consistent_records_and_a_table_that_rows_append_to(tmp_path, saved_models, custom_file):
    eval_dir = tmp_path / "eval"
    overrides = [
        "benchmarks=[toy,custom]",
        "benchmarks.toy.limit=24",
        f"benchmarks.custom.path={custom_file}",
        "benchmarks.custom.columns.id=key",
        "benchmarks.custom.columns.problem=question",
        "benchmarks.custom.columns.answer=final",
        "benchmarks.custom.samples=4",
        "benchmarks.custom.temperature=1.0",
        "benchmarks.custom.top_p=1.0",
        "eval.chunk_answers=8",
    ]
    cfg = compose_evaluate([f"model.path={saved_models / 'warmed'}", *overrides], eval_dir)
    metrics = evaluate(cfg)

    name = "models0/warmed"  # the last two parts of model.path
    tokenizer = build_tokenizer()
    toy = read_records(eval_dir / "models0--warmed" / "toy.jsonl")
    toy_answers = {json.loads(line)["id"]: json.loads(line)["answer"] for line in open(ROOT / "data/toy/test.jsonl")}
    check_records(toy, dict(list(toy_answers.items())[:24]), 1, cfg.model.max_response_tokens, tokenizer)
    custom = read_records(eval_dir / "models0--warmed" / "custom.jsonl")
    check_records(custom, {f"m{a}": str(2 * a + 11) for a in CUSTOM}, 4, 32, tokenizer)

    # Every number is recomputed from the records on disk.
    by_problem: dict[str, list[dict]] = {}
    for r in custom:
        by_problem.setdefault(r["problem_id"], []).append(r)
    groups = [sorted(g, key=lambda r: r["sample"]) for g in by_problem.values()]
    toy_avg, custom_avg = mean(r["correct"] for r in toy), mean(r["correct"] for r in custom)
    assert 0 < toy_avg < 1 and 0 < custom_avg < 1, "the warmed-up model should get some right, some wrong"
    assert metrics["val/toy/avg@1"] == pytest.approx(toy_avg)
    assert metrics["val/custom/avg@4"] == pytest.approx(custom_avg)
    expected_pass2 = mean(pass_at_k(4, sum(r["correct"] for r in g), 2) for g in groups)
    assert metrics["val/custom/pass@2"] == pytest.approx(expected_pass2)
    majority = mean(majority_is_correct([r["extracted"] for r in g], [r["correct"] for r in g]) for g in groups)
    assert metrics["val/custom/maj@4"] == pytest.approx(majority)
    assert metrics["val/average"] == pytest.approx((toy_avg + custom_avg) / 2)
    cells = table_cells(eval_dir / "table.md")
    expected_row = {
        "Toy": f"{100 * toy_avg:.1f}",
        "Custom": f"{100 * custom_avg:.1f}",
        "Average": f"{100 * (toy_avg + custom_avg) / 2:.1f}",
    }
    assert cells == {name: expected_row}

    # A second model adds its row; the first row stays as it was.
    evaluate(compose_evaluate([f"model.path={saved_models / 'untrained'}", *overrides], eval_dir))
    cells = table_cells(eval_dir / "table.md")
    assert list(cells) == [name, "models0/untrained"] and cells[name] == expected_row
    assert [json.loads(line)["model"] for line in (eval_dir / "table.jsonl").read_text().splitlines()] == list(cells)


def test_evaluate_resumes_without_redoing_done_problems(tmp_path, saved_models):
    eval_dir = tmp_path / "eval"
    overrides = [f"model.path={saved_models / 'warmed'}", "benchmarks=[toy]", "benchmarks.toy.limit=12"]
    evaluate(compose_evaluate([*overrides, "eval.chunk_answers=4"], eval_dir))
    path = eval_dir / "models0--warmed" / "toy.jsonl"
    lines = path.read_text().splitlines()
    complete = {(r["problem_id"], r["sample"]): r for r in map(json.loads, lines[1:])}

    # As if interrupted during the second chunk: its line cut short, the third chunk never written. A done record is
    # marked, so that a redone problem would show.
    first = json.loads(lines[1])
    marked = {**first, "response": "KEPT \\boxed{1}", "extracted": "1", "correct": not first["correct"]}
    path.write_text("\n".join([lines[0], json.dumps(marked), *lines[2:5]]) + "\n" + lines[5][:30])
    metrics = evaluate(compose_evaluate([*overrides, "eval.chunk_answers=4"], eval_dir))

    resumed = read_records(path)
    assert len(resumed) == 12 and resumed[0] == marked
    for r in resumed[1:]:  # problems are seeded by their id: the same answers as the uninterrupted run
        assert r == complete[(r["problem_id"], r["sample"])]
    assert metrics["val/toy/avg@1"] == pytest.approx(mean(r["correct"] for r in resumed))

    with pytest.raises(ValueError, match=r"toy.jsonl: these records were made under another protocol \(samples"):
        evaluate(compose_evaluate([*overrides, "benchmarks.toy.samples=2"], eval_dir))


@pytest.mark.full
def test_evaluate_command_line_on_paper_benchmarks(tmp_path, saved_models):
    """The contract: ``python src/evaluate.py model.path=DIR benchmarks=[math500,aime24]``, on the first few problems
    (prompts over the tiny model's limit are left out and counted)."""
    command = [
        sys.executable,
        "src/evaluate.py",
        f"model.path={saved_models / 'warmed'}",
        "benchmarks=[math500,aime24]",
        "benchmarks.math500.limit=5",
        "benchmarks.aime24.limit=4",
        "model.max_prompt_tokens=400",
        f"eval.dir={tmp_path}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| Model | AIME24 | MATH500 | Average |" in result.stdout  # the paper's column order
    assert "AIME24 avg@32, MATH500 avg@1" in result.stdout
    assert "left out for a prompt over the length limit: models0/warmed AIME24 1, models0/warmed MATH500 1" in (
        result.stdout
    )
    assert "problem" in result.stderr and "answers/s" in result.stderr  # progress
    assert len(read_records(tmp_path / "models0--warmed" / "aime24.jsonl")) == 3 * 32
    assert len(read_records(tmp_path / "models0--warmed" / "math500.jsonl")) == 4


@pytest.mark.slow  # a second command-line run (~10-30 s here); the in-process resume test covers the state logic
def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path, saved_models):
    overrides = [
        f"model.path={saved_models / 'warmed'}",
        "benchmarks=[toy]",
        "benchmarks.toy.limit=200",
        "benchmarks.toy.samples=4",
        "eval.chunk_answers=32",
    ]
    records = tmp_path / "models0--warmed" / "toy.jsonl"
    process = subprocess.Popen(
        [sys.executable, "src/evaluate.py", *overrides, f"eval.dir={tmp_path}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ONE_THREAD,
    )
    deadline = time.monotonic() + 120
    while not (records.is_file() and records.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert "run the same command to resume" in stdout  # Hydra logs to stdout
    written = records.read_text()
    assert 0 < len(read_records(records)) < 800

    evaluate(compose_evaluate(overrides, tmp_path))
    assert records.read_text().startswith(written)  # what was written before the interruption was kept
    assert len({(r["problem_id"], r["sample"]) for r in read_records(records)}) == len(read_records(records)) == 800


def test_records_depend_on_the_model_and_the_seed_only(tmp_path, saved_models):
    """Answers are seeded by problem: any chunk size gives the same records, and so does training's evaluation."""
    benchmark = ["benchmarks=[toy]", "benchmarks.toy.limit=12"]
    by_chunk = []
    for chunk in (4, 12):
        eval_dir = tmp_path / f"chunks-of-{chunk}"
        model = f"model.path={saved_models / 'warmed'}"
        evaluate(compose_evaluate([model, *benchmark, f"eval.chunk_answers={chunk}"], eval_dir))
        by_chunk.append(sorted_records(read_records(eval_dir / "models0--warmed" / "toy.jsonl")))
    assert len(by_chunk[0]) == 12 and by_chunk[0] == by_chunk[1]

    # The same warmed-up policy, evaluated by the training callback before its first update.
    run = ["trainer.max_epochs=1", "data.batch.prompts_per_epoch=16", "data.batch.groups_per_step=16"]
    quiet = ["callbacks.checkpoint=null", "callbacks.export=null", "rollout.backend.show_progress=false"]
    train(compose_train([*run, *quiet, *benchmark], run_dir=tmp_path / "run"))
    in_training = [r for r in read_records(tmp_path / "run" / "eval" / "toy.jsonl") if r.pop("epoch") == 0]
    assert sorted_records(in_training) == by_chunk[0]


def sorted_records(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: (r["problem_id"], r["sample"]))
