"""The per-epoch report: what one policy iteration did, filled by its producers, written by one logging callback.

The data module fills ``rollout`` (generation, verification, filtering and batching statistics, and a few decoded
answers), the training module fills ``update`` step by step and ``mismatch`` (engine vs trainer log-probs), and
``nft.eval.EpochSummary`` logs them at the end of the epoch (``RolloutSamples`` shows the answers). The pipeline hands
the one ``EpochReport`` to each of them, so none reaches into another for its numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ShownSample:
    """One decoded training answer, for the loggers."""

    problem: str
    response: str
    answer: str
    correct: bool


@dataclass
class RolloutReport:
    """One epoch's rollout: ``stats`` are logged as they are (``rollout/*``, ``verify/*``, ``time/*`` ...)."""

    epoch: int
    stats: dict[str, float]
    samples: list[ShownSample] = field(default_factory=list)


@dataclass
class UpdateStats:
    """Sums over one epoch's optimizer steps (this rank's view of values already reduced over ranks)."""

    loss: float = 0.0
    grad_norm: float = 0.0
    steps: int = 0
    seconds: float = 0.0

    def add(self, loss: float, grad_norm: float, seconds: float) -> None:
        self.loss += loss
        self.grad_norm += grad_norm
        self.steps += 1
        self.seconds += seconds

    def metrics(self) -> dict[str, float]:
        steps = max(1, self.steps)
        return {
            "time/update": self.seconds,
            "train/epoch_loss": self.loss / steps,
            "train/epoch_grad_norm": self.grad_norm / steps,
        }


@dataclass
class EpochReport:
    rollout: RolloutReport | None = None
    update: UpdateStats = field(default_factory=UpdateStats)
    mismatch: dict[str, float] = field(default_factory=dict)  # rollout/mismatch/* (nft.rollout.integrity)

    def start_epoch(self) -> None:
        """A new epoch's update (the rollout is replaced when the data module generates)."""
        self.update = UpdateStats()
        self.mismatch = {}
