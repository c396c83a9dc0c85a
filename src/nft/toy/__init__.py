"""The embedded default: a tiny Qwen2 policy, built and warmed up offline, for the toy addition task."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from nft.data.problems import load_problems
from nft.data.prompts import PromptTemplate
from nft.lora import apply_lora
from nft.policy import Policy, check_context, pretrained_policy
from nft.toy.model import build_tiny_model, build_tokenizer
from nft.toy.task import make_problems, write_toy_data
from nft.toy.warmup import warm_up

log = logging.getLogger(__name__)

__all__ = ["build_tiny_model", "build_tokenizer", "make_problems", "tiny_policy", "warm_up", "write_toy_data"]


def tiny_policy(
    prompt: PromptTemplate,
    train_path: str,
    path: str | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
    architecture: dict | None = None,
    warmup: dict | None = None,
    max_prompt_tokens: int = 64,
    max_response_tokens: int = 32,
    on_meta_device: bool = False,
    lora: dict | None = None,
) -> Policy:
    """The tiny policy: from ``path`` if given, else built from ``seed`` and warmed up on ``train_path``.
    ``on_meta_device`` applies to a saved model (``path`` or the cache; see ``nft.policy.pretrained_policy``).
    ``lora``: adapters on the warmed-up (or loaded) model (``nft.lora.apply_lora``).

    The warmed-up model is cached in ``cache_dir`` under a key of every setting that shapes it and of the toy
    package's source, written atomically, so runs and tests that share settings warm up once and a model warmed up
    by older code is never reused.
    """
    if path is not None:
        return pretrained_policy(
            path, "float32", max_prompt_tokens, max_response_tokens, on_meta_device=on_meta_device, lora=lora
        )
    architecture, warmup = dict(architecture or {}), dict(warmup or {})
    key = json.dumps(
        {
            "arch": architecture,
            "warmup": warmup,
            "seed": seed,
            "prompt": repr(prompt),
            "data": Path(train_path).name,
            "code": _source_hash(),
        },
        sort_keys=True,
    )
    folder = Path(cache_dir) / f"tiny-{hash_text(key):016x}" if cache_dir else None
    if folder is not None and (folder / "warmup.json").is_file():
        log.info("tiny policy: using the warmed-up model cached in %s", folder)
        return pretrained_policy(
            str(folder), "float32", max_prompt_tokens, max_response_tokens, on_meta_device=on_meta_device, lora=lora
        )

    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed, **architecture)
    if warmup:
        rows = [{"problem": p.problem, "answer": p.answer, **p.extra} for p in load_problems(train_path).problems]
        report = warm_up(model, tokenizer, rows, prompt, seed=seed, max_new_tokens=max_response_tokens, **warmup)
        log.info(
            "tiny policy warmed up: %d steps, sampled accuracy %.3f, %.0fs",
            report["steps"],
            report["accuracy"],
            report["seconds"],
        )
        if folder is not None:
            _save_atomically(model, tokenizer, report, folder)
    check_context(model, max_prompt_tokens, max_response_tokens)
    return Policy(apply_lora(model, **(lora or {})), tokenizer)


def _source_hash() -> int:
    """The toy package's own code (model, task, warm-up): what shapes a warmed-up model besides its settings."""
    return hash_text("".join(p.read_text() for p in sorted(Path(__file__).parent.glob("*.py"))))


def hash_text(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _save_atomically(model, tokenizer, report: dict, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".staging-"))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "warmup.json").write_text(json.dumps(report))
    try:
        os.replace(staging, folder)
    except OSError:  # another process cached the same model first
        shutil.rmtree(staging, ignore_errors=True)
