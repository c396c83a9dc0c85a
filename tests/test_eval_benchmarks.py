"""The benchmarks group, the shipped benchmark files, prompt templates and the evaluator's prompt limit."""

from __future__ import annotations

import copy
import hashlib
import json
import re

import pytest
from hydra.utils import instantiate

from nft.data.problems import load_problems
from nft.eval import Evaluator
from nft.verify import MathVerifier

from .conftest import CONF, ROOT, compose_train

PAPER = {"aime24": 32, "math500": 1, "aime25": 32, "amc23": 32, "olympiad": 1, "minerva": 1}


def readme_benchmark_table() -> dict[str, tuple[int, str]]:
    """file name -> (rows, first 16 hex digits of sha256), as data/README.md lists them."""
    text = (ROOT / "data" / "README.md").read_text()
    rows = re.findall(r"\| `benchmarks/([\w.]+)` \| ([\d,]+) \| [\d,]+ \| ([0-9a-f]{16}) \|", text)
    return {name: (int(count.replace(",", "")), digest) for name, count, digest in rows}


def test_shipped_benchmark_files_are_the_documented_copies():
    listed = readme_benchmark_table()
    assert len(listed) == 6
    for name, (rows, digest) in listed.items():
        path = ROOT / "data" / "benchmarks" / name
        assert hashlib.sha256(path.read_bytes()).hexdigest()[:16] == digest, name
        assert len(load_problems(path)) == rows, name


def test_paper_composes_all_six_with_the_papers_protocol():
    cfg = compose_train(["model=qwen7b", "benchmarks=paper"])
    assert list(cfg.benchmarks) == list(PAPER)  # Table 1's order
    for name, samples in PAPER.items():
        spec = cfg.benchmarks[name]
        assert (spec.samples, spec.temperature, spec.top_p, spec.top_k) == (samples, 0.6, 0.7, 0), name
        assert spec.max_new_tokens == cfg.model.max_response_tokens == 3584
    files = {readme_name for readme_name in readme_benchmark_table()}
    assert {cfg.benchmarks[n].path.rsplit("/", 1)[1] for n in PAPER} == files


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "benchmarks").glob("*.yaml")))
def test_every_benchmarks_option_composes(option):
    cfg = compose_train([f"benchmarks={option}"] + (["benchmarks.custom.path=x.jsonl"] if option == "custom" else []))
    assert cfg.benchmarks and all(spec.samples >= 1 and spec.title for spec in cfg.benchmarks.values())


def test_benchmarks_compose_as_a_list_and_build_an_evaluator(tokenizer):
    cfg = compose_train(["benchmarks=[math500,aime24]", "benchmarks.aime24.limit=3"])
    assert list(cfg.benchmarks) == ["math500", "aime24"]
    evaluator = Evaluator(cfg.benchmarks, instantiate(cfg.prompt), MathVerifier(num_workers=1))
    aime = evaluator.prepare(evaluator.benchmarks[1], tokenizer)
    assert [p.id for p in aime.problems] == ["aime24/60", "aime24/61", "aime24/62"]
    assert evaluator.benchmarks[1].metric == "avg@32" and evaluator.benchmarks[1].title == "AIME24"


def test_custom_benchmark_reads_a_parquet_file_with_a_column_mapping(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": f"What is {a}+1?", "final": str(a + 1)} for a in range(5)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mine.parquet")
    cfg = compose_train(
        [
            "benchmarks=[custom]",
            f"benchmarks.custom.path={tmp_path / 'mine.parquet'}",
            "benchmarks.custom.columns.problem=question",
            "benchmarks.custom.columns.answer=final",
        ]
    )
    evaluator = Evaluator(cfg.benchmarks, instantiate(cfg.prompt), MathVerifier(num_workers=1))
    prepared = evaluator.prepare(evaluator.benchmarks[0], tokenizer)
    assert [(p.problem, p.answer) for p in prepared.problems] == [(r["question"], r["final"]) for r in rows]
    assert prepared.prompt_ids[0] == tokenizer("What is 0+1?\n", add_special_tokens=False)["input_ids"]


def test_long_prompts_are_skipped_or_refused_by_name(tmp_path, tokenizer):
    path = tmp_path / "set.jsonl"
    rows = [{"id": "short", "problem": "1+1?", "answer": "2"}, {"id": "long", "problem": "x" * 100, "answer": "1"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    benchmarks = {"mine": {"path": str(path)}}
    prompt = instantiate(compose_train([]).prompt)
    skip = Evaluator(benchmarks, prompt, MathVerifier(num_workers=1), max_prompt_tokens=20)
    prepared = skip.prepare(skip.benchmarks[0], tokenizer)
    assert [p.id for p in prepared.problems] == ["short"] and [p.id for p in prepared.skipped] == ["long"]
    refuse = Evaluator(benchmarks, prompt, MathVerifier(num_workers=1), max_prompt_tokens=20, long_prompts="error")
    pattern = r"set.jsonl, line 2, field 'problem': the prompt of problem 'long' is 101 tokens.*max_prompt_tokens=20"
    with pytest.raises(ValueError, match=pattern):
        refuse.prepare(refuse.benchmarks[0], tokenizer)


QWEN_MATH_COT = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
    "<|im_start|>user\nWhat is 1+1?<|im_end|>\n<|im_start|>assistant\n"
)
CHATML_JINJA = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_prompt_options_render_qwen_math_cot_the_tokenizers_template_and_plain(tokenizer):
    def prompt(option):
        return instantiate(compose_train([f"prompt={option}"]).prompt)

    assert prompt("qwen_math_cot").render("What is 1+1?") == QWEN_MATH_COT  # Qwen2.5-Math's evaluation prompt
    assert prompt("plain").render("What is 1+1?") == "What is 1+1?\n"
    with pytest.raises(ValueError, match="chat template"):
        prompt("chat_template").render("What is 1+1?", tokenizer)
    with_template = copy.deepcopy(tokenizer)
    with_template.chat_template = CHATML_JINJA  # Qwen's tokenizers carry a ChatML template like this one
    assert prompt("chat_template").render("What is 1+1?", with_template) == QWEN_MATH_COT
