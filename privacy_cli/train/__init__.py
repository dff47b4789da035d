"""Training loops and losses for the learned methods (ERASER fine-tuning).

Heavy imports (torch, models) live in the submodules; ``from privacy_cli.train.eraser import
train_eraser, TrainConfig`` when needed.
"""

from __future__ import annotations

__all__ = ["data", "eraser", "losses"]
