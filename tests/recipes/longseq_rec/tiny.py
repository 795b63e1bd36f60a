"""The tiny longseq_rec run shared by the recipe contract test, the session fixtures (``tests/conftest.py``) and the
dashboard tests: ``fusion train longseq_rec --config quick`` shrunk to seconds on the lifelong generator.

40 synthetic users with 60-behaviour histories and 2 targets each (the test split has 4 users, 8 rows: even, so
2 DDP processes split it without padding), top-4 search, 8/16-d tables, 4 epochs of one batch holding the whole
training split (64 rows), so the training is the same with 1 process or 2 (see ``DDP_TOLERANCE``).
"""
from __future__ import annotations

TINY_OVERRIDES: tuple[str, ...] = (
    "--config", "quick",
    "--data.dataset", "lifelong-synthetic",
    "--data.lifelong_users", "40",
    "--data.lifelong_history", "60",
    "--data.lifelong_items", "32",
    "--data.lifelong_cates", "4",
    "--data.lifelong_themes", "4",
    "--data.lifelong_interests", "2",
    "--data.lifelong_relevant", "2",
    "--data.lifelong_targets_per_user", "2",
    "--data.user_hash_buckets", "8",
    "--data.max_history", "60",
    "--data.batch_size", "64",
    "--model.config.top_k", "4",
    "--model.config.attention_dim", "8",
    "--model.config.representation_dim", "16",
    "--model.config.profile_dim", "4",
    "--model.config.din_window", "8",
    "--model.config.mlp_hidden", "[16]",
    "--model.config.head_norm", "false",
    "--trainer.max_epochs", "4",
    "--trainer.logger", "false",
    "--trainer.enable_progress_bar", "false",
)

# DIN, TWIN and DARE fuse nothing with a fusion_core operator: their head is the papers' prediction MLP on
# [target, interest, target ⊙ interest, profile], where the interest is the history pooled by attention *to the
# scored item* (so it is not a per-modality vector) and target ⊙ interest is a target-specific cross term. Putting
# a fusion operator over {history, profile} there would replace the architecture this recipe reproduces.
SEQUENTIAL_OVERRIDES: tuple[str, ...] | None = None

# Every step is one batch of the whole training split: 2 processes each hold half of it (32 rows) and DDP averages
# their mean gradients, which is the 1-process mean gradient over all 64 rows, from the same initial weights (the
# model has no batch statistics — head_norm is off — and no dropout here). So the weights, and the test metrics, differ only by the order
# of floating-point sums. 1e-3 leaves room for that and is far below one swapped pair of scores on the 8 test rows
# (an AUC step of 1/16).
DDP_TOLERANCE = 1e-3
