"""``make bench`` / ``python -m nft.bench``: seconds per policy iteration of the fixed workload, via the pipeline.

    python -m nft.bench [--no-trl] [--contended] [--json FILE] [hydra overrides...]

Runs ``src/train.py experiment=bench`` in this process (``nft.pipeline.build``: the same data module, generator,
verifier, module and Lightning trainer as training), 6 iterations, and reports the median of iterations 2..6, the
phases, the peak RSS and how far the iteration is from this machine's matmul floor: the floor of the workload's nominal
FLOPs (one forward per answer, docs/bench_workload.md sections 7-8) and that of the FLOPs nft does (each prompt
once). Then, when TRL is installed (the ``bench`` extra), the same workload with TRL's ``GRPOTrainer`` in a subprocess
(``nft.bench.trl_baseline``), and the ratio. ``--contended`` runs the workload a second time while another process
keeps one core busy (a Python loop: a browser tab, another job) and prints both medians and their ratio
(``nft.threads``: each run decides its thread count at start, from the cores other processes leave free). The last
line printed is ``seconds_per_iteration=<median>`` (the idle one).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

import nft
from nft.bench.timing import IterationTimer
from nft.bench.workload import competing_process, iteration_flops, matmul_flops_per_second, peak_rss_mb
from nft.pipeline import build

PHASES = ("generate", "verify", "old_logp", "update")
BUSY_FRACTION = 0.1  # other processes' CPU per wall second above which an iteration is flagged


def run_pipeline(overrides: list[str]) -> dict:
    """Six iterations of ``experiment=bench`` (with ``overrides``) through ``nft.pipeline``; the timings."""
    with initialize_config_dir(config_dir=str(Path(nft.project_root()) / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=bench", *overrides])
    with tempfile.TemporaryDirectory(prefix="nft-bench-") as run_dir:
        with open_dict(cfg):
            cfg.run_dir = run_dir
        run = build(cfg)
        run.trainer.fit(run.module, datamodule=run.datamodule)
        timer = next(c for c in run.trainer.callbacks if isinstance(c, IterationTimer))
        lengths = [len(prompt) for prompt in run.datamodule.prompt_ids]
        shape = (lengths, cfg.data.batch.samples_per_prompt, cfg.rollout.sampling.max_new_tokens)
        per_iteration = len(lengths) / cfg.data.batch.prompts_per_epoch  # the FLOP model's iterations over the file
        return {
            "iterations": timer.iterations,
            "flops": sum(iteration_flops(*shape)) / per_iteration,
            "flops_done": sum(iteration_flops(*shape, prompt_once=True)) / per_iteration,
            "prompts": cfg.data.batch.prompts_per_epoch,
            "answers": cfg.data.batch.prompts_per_epoch * cfg.data.batch.samples_per_prompt,
            "max_new_tokens": cfg.rollout.sampling.max_new_tokens,
            "peak_rss_mb": peak_rss_mb(),
        }


def summarize(iterations: list[dict]) -> dict[str, float]:
    timed = iterations[1:] or iterations  # iteration 1 is the warm-up
    seconds = [it["seconds"] for it in timed]
    out = {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds)}
    for phase in PHASES:
        out[phase] = statistics.median(it[phase] for it in timed)
    out["other"] = statistics.median(it["seconds"] - sum(it[p] for p in PHASES) for it in timed)
    out["busy"] = [i + 2 for i, it in enumerate(timed) if it["foreign_cpu"] > BUSY_FRACTION * it["seconds"]]
    return out


def run_trl() -> dict | None:
    """TRL's GRPOTrainer on the same workload, in a subprocess; None when TRL is not installed or fails."""
    if importlib.util.find_spec("trl") is None:
        print("TRL: not installed, skipped (pip install -e '.[bench]' for the side-by-side run)")
        return None
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "-m", "nft.bench.trl_baseline"], capture_output=True, text=True, env=env, timeout=1800
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("TRL_RESULT ")), None)
    if result.returncode != 0 or line is None:
        print(f"TRL: the baseline failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
        return None
    return json.loads(line.removeprefix("TRL_RESULT "))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-trl", action="store_true", help="skip the side-by-side TRL GRPOTrainer run")
    parser.add_argument("--threads", type=int, help="torch threads (default: decided at start, nft.threads)")
    parser.add_argument("--contended", action="store_true", help="also time it with one competing busy process")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("overrides", nargs="*", help="hydra overrides of experiment=bench")
    args = parser.parse_args(argv)
    if args.threads is not None:
        args.overrides.append(f"threads={args.threads}")

    peak = matmul_flops_per_second()
    ours = run_pipeline(args.overrides)
    threads = torch.get_num_threads()
    stats = summarize(ours["iterations"])
    print(
        f"\nnft: {len(ours['iterations'])} iterations of {ours['answers']} answers (up to {ours['max_new_tokens']} "
        f"tokens), {threads} threads"
    )
    print("iteration  seconds  generate  verify  old_logp  update  response_len  other_cpu_s")
    for i, it in enumerate(ours["iterations"], 1):
        print(
            f"{i:9d}  {it['seconds']:7.3f}  {it['generate']:8.3f}  {it['verify']:6.3f}  {it['old_logp']:8.3f}  "
            f"{it['update']:6.3f}  {it['response_length']:12.1f}  {it['foreign_cpu']:11.2f}"
        )
    print(
        f"median of iterations 2..{len(ours['iterations'])}: {stats['median']:.3f} s "
        f"(min {stats['min']:.3f}, max {stats['max']:.3f})"
    )
    print(
        "breakdown (medians): " + ", ".join(f"{p} {stats[p]:.3f} s" for p in PHASES) + f", other {stats['other']:.3f} s"
    )
    print(f"peak RSS: {ours['peak_rss_mb']:.0f} MB")
    floor, floor_done = ours["flops"] / peak, ours["flops_done"] / peak
    print(
        f"nominal FLOPs: {ours['flops'] / 1e9:.1f} GFLOP per iteration; fp32 matmul peak here {peak / 1e9:.0f} GFLOP/s "
        f"-> floor {floor:.2f} s; floor / measured = {floor / stats['median']:.2f}"
    )
    print(
        f"FLOPs done (each prompt through the model once for its {ours['answers'] // ours['prompts']} answers): "
        f"{ours['flops_done'] / 1e9:.1f} GFLOP -> floor {floor_done:.2f} s; floor / measured = "
        f"{floor_done / stats['median']:.2f}"
    )
    if stats["busy"]:
        print(f"WARNING: other processes used the CPU during iterations {stats['busy']}: rerun on an idle machine")
    if args.contended:
        with competing_process():
            contended = summarize(run_pipeline(args.overrides)["iterations"])
            contended["threads"] = torch.get_num_threads()
        print(
            f"with one competing busy process: {contended['median']:.3f} s per iteration (min {contended['min']:.3f}, "
            f"max {contended['max']:.3f}; {contended['threads']} threads; generate {contended['generate']:.3f} s, "
            f"update {contended['update']:.3f} s) "
            f"= {contended['median'] / stats['median']:.2f}x the idle {stats['median']:.3f} s"
        )
        ours["contended"] = contended

    trl = None if args.no_trl else run_trl()
    if trl is not None:
        seconds = trl["seconds"][1:]
        trl_median = statistics.median(seconds)
        trl_generate = statistics.median(trl["generate"][1:])
        print(
            f"TRL 1.16 GRPOTrainer, same workload: {trl_median:.3f} s per iteration (min {min(seconds):.3f}, "
            f"max {max(seconds):.3f}; generate {trl_generate:.3f} s, rest {trl_median - trl_generate:.3f} s), "
            f"peak RSS {trl['peak_rss_mb']:.0f} MB"
        )
        print(f"nft / TRL = {stats['median'] / trl_median:.2f}x")
        ours["trl"] = trl
    if args.json:
        args.json.write_text(json.dumps({**ours, "summary": stats, "matmul_flops_per_second": peak}, indent=1))
    print(f"seconds_per_iteration={stats['median']:.4f}")


if __name__ == "__main__":
    main()
