"""Problem files: loading and clear errors that name the file, the line and the field."""

from __future__ import annotations

import json
import logging

import pytest

from nft.data import BatchShape, OnlineMathDataModule, ProblemFileError, PromptTemplate, load_problems
from nft.rollout import SamplingParams

from .conftest import ROOT, PolicyHandle

GOOD = {"id": "a", "problem": "What is 1+1?", "answer": "2"}


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad_line", "field", "message"),
    [
        ("{not json", "json", "not valid JSON"),
        (json.dumps({"id": "b", "answer": "3"}), "problem", "missing field 'problem'"),
        (json.dumps({"id": "b", "problem": "  ", "answer": "3"}), "problem", "is empty"),
        (json.dumps({"id": "b", "problem": "x", "answer": 3}), "answer", "must be a string"),
        (json.dumps({"id": "b", "problem": "x", "answer": ""}), "answer", "is empty"),
        (json.dumps({"id": "a", "problem": "x", "answer": "1"}), "id", "duplicate id 'a' (first seen on line 1)"),
        (json.dumps(["a", "list"]), "row", "expected a JSON object"),
    ],
)
def test_bad_row_names_file_line_and_field(tmp_path, bad_line, field, message):
    path = write_lines(tmp_path / "train.jsonl", [json.dumps(GOOD), "", bad_line])
    with pytest.raises(ProblemFileError) as error:
        load_problems(path)
    text = str(error.value)
    assert str(path) in text and "line 3" in text and f"field '{field}'" in text and message in text
    skipped = load_problems(path, on_bad_row="skip")
    assert [p.id for p in skipped.problems] == ["a"] and skipped.skipped == {field: 1}


def test_column_mapping_extra_fields_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"uid": "x1", "question": "Q1", "final": "1", "level": 3}, {"uid": "x2", "question": "Q2", "final": "2"}]
    path = tmp_path / "set.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    loaded = load_problems(path, columns={"id": "uid", "problem": "question", "answer": "final"})
    assert [(p.id, p.problem, p.answer) for p in loaded.problems] == [("x1", "Q1", "1"), ("x2", "Q2", "2")]
    assert loaded.problems[0].extra == {"level": 3}


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ProblemFileError, match="no such problem file"):
        load_problems(tmp_path / "nope.jsonl")


def test_shipped_files_load():
    assert len(load_problems(ROOT / "data" / "toy" / "test.jsonl")) == 500


def test_prompt_styles(tokenizer):
    plain = PromptTemplate(style="plain", user="{problem}\n")
    assert plain.render("What is 1+1?") == "What is 1+1?\n"
    chatml = PromptTemplate(style="chatml", system="Be brief.", user="{problem}")
    text = chatml.render("Q")
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    ids = chatml.encode(["Q"], tokenizer)[0]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # special tokens parsed, none added
    with pytest.raises(ValueError, match="chat template"):
        PromptTemplate(style="chat_template").render("Q", tokenizer)
    with pytest.raises(ValueError, match="style"):
        PromptTemplate(style="fancy")


def test_bad_rows_are_skipped_and_counted_in_the_log(tmp_path, caplog):
    lines = [json.dumps(GOOD), "{not json", json.dumps({"id": "b", "problem": "x"})]
    path = write_lines(tmp_path / "train.jsonl", lines)
    with caplog.at_level(logging.WARNING, logger="nft.data.problems"):
        loaded = load_problems(path, on_bad_row="skip")
    assert loaded.skipped == {"json": 1, "answer": 1}
    assert f"{path}: skipped 2 bad rows" in caplog.text


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"id": "b", "problem": "x", "answer": None}, "answer", "missing field 'answer'"),
        ({"id": "b", "problem": "", "answer": "3"}, "problem", "is empty"),
        ({"id": "a", "problem": "x", "answer": "3"}, "id", "duplicate id 'a'"),
    ],
)
def test_bad_parquet_row_names_file_row_and_field(tmp_path, row, field, message):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([GOOD, row]), path)
    with pytest.raises(ProblemFileError) as error:
        load_problems(path)
    assert f"{path}, line 2, field '{field}': " in str(error.value) and message in str(error.value)
    assert load_problems(path, on_bad_row="skip").skipped == {field: 1}


def test_parquet_with_numeric_answers_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "a", "problem": "x", "answer": 2}]), path)
    with pytest.raises(ProblemFileError, match=r"line 1, field 'answer': field 'answer' must be a string, got int"):
        load_problems(path)


def test_prompt_over_the_limit_names_file_line_and_field_or_is_skipped_and_counted(tmp_path, tokenizer, caplog):
    long_row = {"id": "long", "problem": "What is " + "1+" * 40 + "1?", "answer": "41"}
    path = write_lines(tmp_path / "train.jsonl", [json.dumps(GOOD), json.dumps(long_row)])
    datamodule = OnlineMathDataModule(
        str(path),
        PromptTemplate(style="plain", user="{problem}\n"),
        None,
        None,
        SamplingParams(),
        BatchShape(prompts_per_epoch=1),
        max_prompt_tokens=32,
    )
    datamodule.connect(PolicyHandle(None, tokenizer))
    with pytest.raises(ProblemFileError) as error:
        datamodule.setup()
    text = str(error.value)
    assert f"{path}, line 2, field 'problem': the prompt of problem 'long' is 91 tokens" in text
    assert "data.max_prompt_tokens=32" in text and "data.long_prompts=skip" in text

    datamodule.on_bad_row = "skip"
    with caplog.at_level(logging.WARNING, logger="nft.data.answers"):
        datamodule.setup()
    assert [p.id for p in datamodule.problems] == ["a"] and datamodule.skipped_rows == {"prompt_tokens": 1}
    assert f"{path}: skipped 1 rows whose prompt is over data.max_prompt_tokens=32 (field 'problem', lines 2)" in (
        caplog.text
    )
