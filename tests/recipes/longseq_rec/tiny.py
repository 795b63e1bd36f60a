"""The tiny longseq_rec run shared by the recipe contract test, the session fixtures (``tests/conftest.py``) and the
dashboard tests: ``fusion train longseq_rec --config quick`` shrunk to seconds on the lifelong generator.

40 synthetic users with 60-behaviour histories and 2 targets each (the test split has 4 users, 8 rows: even, so
2 DDP processes split it without padding), top-4 search, 8/16-d tables, 4 training batches of 8.
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
    "--data.batch_size", "8",
    "--model.config.top_k", "4",
    "--model.config.attention_dim", "8",
    "--model.config.representation_dim", "16",
    "--model.config.profile_dim", "4",
    "--model.config.din_window", "8",
    "--model.config.mlp_hidden", "[16]",
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "4",
    "--trainer.logger", "false",
    "--trainer.enable_progress_bar", "false",
)

# DIN, TWIN and DARE fuse nothing with a fusion_core operator: their head is the papers' prediction MLP on
# [target, interest, target ⊙ interest, profile], where the interest is the history pooled by attention *to the
# scored item* (so it is not a per-modality vector) and target ⊙ interest is a target-specific cross term. Putting
# a fusion operator over {history, profile} there would replace the architecture this recipe reproduces.
SEQUENTIAL_OVERRIDES: tuple[str, ...] | None = None

# 1 and 2 processes train on different batches (2 × 4 batches of 8 against 4 of 8, in another order) for 4 steps
# from the same initial weights; the test split has 8 rows, so one swapped pair of scores moves the AUC by 1/16 and
# a user's GAUC by 1/4 of that user's weight. The evaluation itself is exact in both (checked by the contract test).
DDP_TOLERANCE = 0.25
