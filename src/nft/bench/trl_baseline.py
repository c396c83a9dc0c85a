"""The same workload with TRL's ``GRPOTrainer``, for the side-by-side comparison of ``make bench``.

    python -m nft.bench.trl_baseline   # needs the bench extra: pip install -e '.[bench]' (trl==1.16.0)

Set up for TRL's best run on this workload: transformers generation (no vLLM), one ``generate`` call over all 512 rows
(``steps_per_generation`` = 8 accumulated micro-batches of 64), one optimizer step per iteration, no extra
old-log-prob pass (``num_iterations=1``), no KL, DAPO token normalisation, the same model, tokenizer, prompts, reward,
optimizer and clipping. TRL's own defaults that would slow it for no gain here are turned off: ``GRPOConfig``
defaults to ``gradient_checkpointing=True`` (each micro-batch's forward recomputed in backward; nft does not
checkpoint either) and to ``bf16=True`` (no bf16 on this CPU path). Per-iteration wall time is measured from the end
of one optimizer step to the end of the next; generation time by timing the model's ``generate`` calls. Prints one
``TRL_RESULT {json}`` line.
"""

from __future__ import annotations

import json
import tempfile
import time

import torch

from nft.bench.workload import ITERATIONS, PROMPTS_PER_ITERATION, peak_rss_mb, rows
from nft.toy import build_tiny_model, build_tokenizer


def boxed_sum_reward(completions: list[str], answer: list[str], **_) -> list[float]:
    """docs/bench_workload.md section 5: 1 when ``\\boxed{a+b}`` appears in the completion."""
    return [1.0 if f"\\boxed{{{a}}}" in c else 0.0 for c, a in zip(completions, answer, strict=True)]


def main() -> None:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(2)
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=0)
    generate_seconds: list[float] = []
    plain_generate = model.generate

    def timed_generate(*args, **kwargs):
        start = time.perf_counter()
        out = plain_generate(*args, **kwargs)
        generate_seconds.append(time.perf_counter() - start)
        return out

    model.generate = timed_generate
    dataset = Dataset.from_list([{"prompt": r["problem"], "answer": r["answer"]} for r in rows()])

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as output_dir:
        config = GRPOConfig(
            output_dir=output_dir,
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,  # TRL's default is True: a second forward per micro-batch
            seed=0,
            max_steps=ITERATIONS,
            per_device_train_batch_size=PROMPTS_PER_ITERATION,
            gradient_accumulation_steps=8,
            num_generations=8,
            max_completion_length=32,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            num_iterations=1,
            beta=0.0,
            epsilon=0.2,
            loss_type="dapo",
            scale_rewards="group",
            learning_rate=1e-5,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            adam_beta1=0.9,
            adam_beta2=0.999,
            adam_epsilon=1e-8,
            max_grad_norm=1.0,
            shuffle_dataset=False,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=boxed_sum_reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        trainer.train()
    seconds = [b - a for a, b in zip(timer.marks, timer.marks[1:], strict=False)]
    result = {
        "seconds": seconds,
        "generate": generate_seconds,
        "peak_rss_mb": peak_rss_mb(),
    }
    print("TRL_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
