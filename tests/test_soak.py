"""Soak (``make test-slow``): 50 epochs of the toy run while verifier workers crash and hang at random.

``faulty_grade`` wraps the real grader in the verifier's workers: with probability ``CRASH`` the worker dies on the
spot (``os._exit``), with probability ``HANG`` it sleeps far past the timeout. Each injection first leaves a file in
``INJECTED``, so the count survives the death of the worker that made it. The run must finish, and the verifier's
counters (logged as ``verify/errors`` and ``verify/timeouts``) must equal what was injected.
"""

from __future__ import annotations

import csv
import os
import random
import sys
import time
import uuid
from pathlib import Path

import pytest

from nft.pipeline import build
from nft.verify.grader import grade

from .conftest import compose_train

# Per answer. A custom grade_fn decides every answer in the pool (no fast path in the parent), so all 512 answers of
# an epoch draw: about 2 crashes and 2 hangs per epoch, each hang costing a 2 s timeout.
CRASH, HANG = 0.004, 0.004
INJECTED: Path | None = None  # set by the test before the verifier forks its workers, which inherit it


def faulty_grade(response: str, answer: str, timeout: int, strict: bool) -> bool:
    draw = random.SystemRandom().random()  # not `random`: forked workers share its state
    if draw < CRASH + HANG:
        kind = "crash" if draw < CRASH else "hang"
        (INJECTED / f"{kind}-{uuid.uuid4().hex}").touch()
        if kind == "crash":
            os._exit(1)
        time.sleep(100 * timeout)  # far past any deadline: the worker must be given up on and replaced
    return grade(response, answer, timeout, strict)


@pytest.mark.slow
@pytest.mark.timeout(3600)  # 50 toy epochs plus what each injected fault costs
def test_fifty_epochs_with_crashing_and_hanging_verifier_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "INJECTED", tmp_path / "injected")
    INJECTED.mkdir()
    cfg = compose_train(
        [
            "trainer.max_epochs=50",
            "callbacks.benchmark_eval=null",
            "rollout.backend.show_progress=false",
            "verifier.timeout=2",  # short, yet long enough for a real answer on a busy machine
            f"+verifier.grade_fn={{_target_:hydra.utils.get_method,path:{__name__}.faulty_grade}}",
        ],
        run_dir=tmp_path / "run",
    )
    run = build(cfg)
    run.trainer.fit(run.module, datamodule=run.datamodule)

    crashes, hangs = len(list(INJECTED.glob("crash-*"))), len(list(INJECTED.glob("hang-*")))
    assert run.trainer.current_epoch == 50
    assert crashes > 0 and hangs > 0, "nothing was injected: the toy run sent no answer to the verifier's pool"
    assert run.datamodule.verifier.counters["errors"] == crashes
    assert run.datamodule.verifier.counters["timeouts"] == hangs
    with (tmp_path / "run" / "logs" / "metrics.csv").open() as f:
        last = [row for row in csv.DictReader(f) if row["verify/errors"]][-1]
    assert (float(last["verify/errors"]), float(last["verify/timeouts"])) == (crashes, hangs)
