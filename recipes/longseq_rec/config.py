"""The recommendation recipe's one config: every hyperparameter of DIN / TWIN / DARE and their training, declared once.

YAML: ``model: {config: {model: dare, top_k: 32, ...}}``; override with ``--model.config.top_k 16``. The table sizes
(``num_users``, ``num_items``, ``num_cates``, ``num_time_buckets``, ``profile_cardinalities``) come from the data
module, linked by the recipe (``("data.num_items", "model.config.num_items")`` ...). Imports nothing else of the
vertical, so both the model and the module read it without an import circle.
"""
from __future__ import annotations

from dataclasses import dataclass

from recipes.runtime.config import RecipeConfig

__all__ = ["MODEL_NAMES", "SEARCH_PATHS", "OPTIMIZERS", "RecConfig"]

MODEL_NAMES: tuple[str, ...] = ("din", "twin", "dare")
SEARCH_PATHS: tuple[str, ...] = ("auto", "lookup", "table")
OPTIMIZERS: tuple[str, ...] = ("adam", "adamw")


@dataclass(kw_only=True)
class RecConfig(RecipeConfig):
    """DIN / TWIN / DARE and their training.

    ``num_*`` and ``profile_cardinalities`` are vocabulary sizes including id 0 (padding/unknown), linked from the
    data. ``model`` picks ``din`` | ``twin`` | ``dare``; ``attention_dim`` is DARE's attention-table width,
    ``representation_dim`` the representation-table width (and the single table's width for DIN and TWIN);
    ``profile_dim`` the width of each profile field's embedding; ``user_dim`` > 0 adds a user-id embedding to the
    profile (ids of unseen users carry no signal, so it is off by default); ``top_k`` the behaviours the search stage
    keeps (TWIN, DARE), ``din_window`` the recent behaviours DIN attends to; ``temperature`` the stage-2 softmax
    temperature (None: 1 with ``per_part_scaling``, else √ of the attention width).

    Training choices of the DARE reference code (thuml/DARE), each on by default and switchable for the ablation in
    ``bench/longseq.py``: ``embedding_std`` initialises every embedding table N(0, std²) (None: PyTorch's N(0, 1));
    ``per_part_scaling`` scores a behaviour as ``(item, category)·/√d + time·/√d_time`` in both stages (False: one
    dot product, divided by ``temperature`` in stage 2 only); ``head_norm`` puts BatchNorm + PReLU after each hidden
    layer of the prediction MLP (False: GELU); ``optimizer`` ``adam`` applies ``weight_decay`` as an L2 penalty (the
    reference's Adam with 1e-6), ``adamw`` as decoupled decay. ``search`` picks the stage-1 path: ``lookup`` embeds
    every behaviour (O(L·d)), ``table`` scores the target against the whole attention table once and gathers the
    scores by id (O(catalogue·d + L)); ``auto`` takes ``table`` when the item catalogue is smaller than the history.
    ``aux_loss`` (TWIN, DARE) adds the reference's auxiliary click loss: a second head predicts the click from a
    softmax attention over the *whole* history, so every behaviour's attention embedding gets a gradient, not only
    the top-k kept ones (the main prediction is unchanged; off by default).
    """

    num_users: int = 0
    num_items: int = 2
    num_cates: int = 2
    num_time_buckets: int = 16
    profile_cardinalities: tuple[int, ...] = ()
    model: str = "dare"
    attention_dim: int = 16
    representation_dim: int = 64
    profile_dim: int = 8
    user_dim: int = 0
    top_k: int = 32
    din_window: int = 50
    mlp_hidden: tuple[int, ...] = (200, 80)
    dropout: float = 0.0
    temperature: float | None = None
    embedding_std: float | None = 0.01
    per_part_scaling: bool = True
    head_norm: bool = True
    optimizer: str = "adam"
    search: str = "auto"
    aux_loss: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        # YAML and hparams.yaml give lists; the model keeps tuples
        self.profile_cardinalities = tuple(int(c) for c in self.profile_cardinalities)
        self.mlp_hidden = tuple(int(h) for h in self.mlp_hidden)
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model = {self.model!r}; choose one of {list(MODEL_NAMES)}")
        for name in ("num_items", "num_cates", "num_time_buckets"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} = {getattr(self, name)}; a vocabulary needs at least 2 ids (0 is padding)")
        if any(c < 2 for c in self.profile_cardinalities):
            raise ValueError(f"profile_cardinalities {list(self.profile_cardinalities)}: every field needs >= 2 ids")
        for name in ("attention_dim", "representation_dim"):
            if getattr(self, name) < 4:
                raise ValueError(f"{name} = {getattr(self, name)}; it must be >= 4 (split into item, category and time parts)")
        for name in ("profile_dim", "top_k", "din_window"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} = {getattr(self, name)}; it must be positive")
        if self.user_dim < 0 or (self.user_dim > 0 and self.num_users < 2):
            raise ValueError(f"user_dim = {self.user_dim} needs num_users >= 2 (got {self.num_users}); set user_dim: 0 to drop the user id")
        if any(h <= 0 for h in self.mlp_hidden):
            raise ValueError(f"mlp_hidden {list(self.mlp_hidden)}: widths must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.embedding_std is not None and not self.embedding_std > 0:
            raise ValueError(f"embedding_std must be positive or null (PyTorch's N(0, 1)); got {self.embedding_std}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer = {self.optimizer!r}; choose one of {list(OPTIMIZERS)}")
        if self.search not in SEARCH_PATHS:
            raise ValueError(f"search = {self.search!r}; choose one of {list(SEARCH_PATHS)}")
        if self.aux_loss and self.model == "din":
            raise ValueError("aux_loss needs a search model (twin or dare); din attends to its recent window only")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be positive or null; got {self.temperature}")
