"""`make bench`: the workload's data and FLOP model, and the real pipeline timed end to end (a short run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nft.bench.workload import BLOCK_MATMUL_PARAMS, BUSY_LOOP, attention_flops, iteration_flops, pairs, rows
from nft.toy import build_tokenizer

from .conftest import ROOT


def test_the_shipped_prompts_are_the_workloads():
    shipped = [json.loads(line) for line in (ROOT / "data/bench/addition.jsonl").read_text().splitlines()]
    assert shipped == rows() and len(shipped) == 384 == len(set(pairs()))
    assert (
        shipped[0]["problem"] == "What is 864 + 394? Put the final answer in \\boxed{}."
        and shipped[0]["answer"] == "1258"
    )


def test_the_flop_model_matches_the_workload_figures():
    tokenizer = build_tokenizer()
    lengths = [len(tokenizer(r["problem"])["input_ids"]) for r in rows()]
    assert min(lengths) == 49 and max(lengths) == 52
    generate, update = iteration_flops(lengths[64:])  # iterations 2..6
    assert generate / 5e9 == pytest.approx(88.0, abs=0.05) and update / 5e9 == pytest.approx(267.4, abs=0.05)
    # Each prompt once: with one sample per prompt that is the nominal model, less the answer's last token in the
    # update (it predicts nothing, and the shared-prompt forward does not feed it); with 8, the prompt's share of the
    # work is paid once instead of 8 times.
    once = iteration_flops(lengths[64:], samples=1, prompt_once=True)
    nominal = iteration_flops(lengths[64:], samples=1)
    last_tokens = sum(
        6 * BLOCK_MATMUL_PARAMS + 3 * (attention_flops(p + 32) - attention_flops(p + 31)) for p in lengths[64:]
    )
    assert once[0] == nominal[0] and once[1] == pytest.approx(nominal[1] - last_tokens, rel=1e-12)
    generate_once, update_once = iteration_flops(lengths[64:], prompt_once=True)
    assert 0.4 < generate_once / generate < 0.5 and 0.45 < update_once / update < 0.5


@pytest.mark.full
def test_bench_times_the_pipeline_and_prints_the_median_last(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    # A smaller iteration (16 prompts) keeps the test short; the code path is make bench's.
    overrides = ["data.batch.prompts_per_epoch=16", "data.batch.groups_per_step=16", "trainer.max_epochs=3"]
    result = subprocess.run(
        [sys.executable, "-m", "nft.bench", "--no-trl", "--contended", "--json", str(out), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("seconds_per_iteration=")
    report = json.loads(out.read_text())
    assert len(report["iterations"]) == 3 and report["answers"] == 128
    assert float(last.split("=")[1]) == pytest.approx(report["summary"]["median"], abs=1e-4)
    for it in report["iterations"]:
        phases = it["generate"] + it["verify"] + it["old_logp"] + it["update"]
        assert 0 < it["generate"] and 0 < it["update"] and phases <= it["seconds"] * 1.01
        assert it["old_logp"] == 0.0  # one optimizer step per iteration: old_logp is logp.detach()
        assert 1 <= it["response_length"] <= 32
    assert "nominal FLOPs" in result.stdout and "FLOPs done" in result.stdout and "peak RSS" in result.stdout
    # --contended: the same workload beside a busy process, which is gone afterwards (it is not the bench's child).
    assert report["contended"]["median"] > 0 and "with one competing busy process" in result.stdout
    assert not busy_loops(), "the competing process outlived the bench"


def busy_loops() -> list[str]:
    """Processes running the bench's competing busy loop."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if BUSY_LOOP.encode() in cmdline.read_bytes():
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found
