"""The embedded default of the recommendation recipe: lifelong synthetic behaviour histories whose targets depend
on a few behaviours planted far back (``lifelong-synthetic``; see data_cards/lifelong-synthetic.md).

:func:`generate_lifelong` draws them, :class:`LifelongData` holds, saves and loads them, and :func:`fetch_lifelong`
is what ``fusion data fetch lifelong-synthetic`` calls. Pure NumPy, deterministic for a seed.
"""
from __future__ import annotations

import inspect
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recipes.runtime.datasets import progress, replace_dir

__all__ = ["LifelongData", "generate_lifelong", "LIFELONG_DEFAULTS", "STRUCTURES", "fetch_lifelong"]

#: ``planted``: a few relevant behaviours planted far back per target; ``interests``: themes learnable from co-occurrence
STRUCTURES: tuple[str, ...] = ("planted", "interests")


@dataclass
class LifelongData:
    """Output of :func:`generate_lifelong`. Raw ids start at 1 (items, categories, users = row + 1).

    ``hist_item``         (U, H) int32 item ids, chronological (position 0 is the oldest)
    ``hist_timestamp``    (U, H) int64 seconds, increasing along each row
    ``target_item``       (U, T) int64 the T candidate items shown after the history
    ``target_timestamp``  (U,) int64 when they were shown (after the last behaviour)
    ``label``             (U, T) int8 the click: ``planted``, 1 when the history holds the target's theme;
                          ``interests``, drawn from the target's theme being one of the user's and its quality
    ``planted_positions`` (U, T, k) int64 history positions planted for each target: for a positive the k
                          relevant behaviours (same category and theme as the target), for a negative k decoys
                          (same category, other themes); k = 0 for ``interests`` (nothing is planted)
    ``item_cate``         (num_items + 1,) category id of each item id (index 0 unused)
    ``item_theme``        (num_items + 1,) hidden theme (0..num_themes-1) of each item id, within its category
    ``user_interests``    (U, I) the categories each user's background behaviours come from
    ``item_quality``      (num_items + 1,) float64 click propensity (logit) of each item id; zeros for ``planted``
    ``params``            the generator's arguments

    In both structures the behaviours relevant to a target are those of its hidden (category, theme):
    :meth:`relevant_mask`, :meth:`item_group`.
    """

    hist_item: np.ndarray
    hist_timestamp: np.ndarray
    target_item: np.ndarray
    target_timestamp: np.ndarray
    label: np.ndarray
    planted_positions: np.ndarray
    item_cate: np.ndarray
    item_theme: np.ndarray
    user_interests: np.ndarray
    item_quality: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.item_quality is None:  # saved before items had a quality: the planted structure has none
            self.item_quality = np.zeros(self.item_cate.shape, dtype=np.float64)

    @property
    def num_users(self) -> int:
        return int(self.hist_item.shape[0])

    @property
    def history_length(self) -> int:
        return int(self.hist_item.shape[1])

    @property
    def item_group(self) -> np.ndarray:
        """``(num_items + 1,)`` the hidden (category, theme) pair of each item id as one integer (−1 for id 0)."""
        themes = int(self.params.get("num_themes", int(self.item_theme.max()) + 1))
        group = self.item_cate * themes + self.item_theme
        group[0] = -1
        return group

    def relevant_mask(self, user_row: int, target: int) -> np.ndarray:
        """``(H,)`` bool: the behaviours the search stage should find for target ``target`` of user row
        ``user_row``: those of the target's hidden (category, theme). With the ``planted`` structure these are the
        planted ones of a positive and none of a negative (background behaviours never fall in a target's pair)."""
        group = self.item_group
        return group[self.hist_item[user_row]] == group[self.target_item[user_row, target]]

    def head(self, num_users: int) -> "LifelongData":
        """The first ``num_users`` users (the item tables are kept whole)."""
        per_item = ("item_cate", "item_theme", "item_quality")
        per_user = {name: getattr(self, name)[:num_users] for name in self._ARRAYS if name not in per_item}
        return LifelongData(**per_user, **{name: getattr(self, name) for name in per_item}, params=dict(self.params))

    _ARRAYS = ("hist_item", "hist_timestamp", "target_item", "target_timestamp", "label", "planted_positions",
               "item_cate", "item_theme", "user_interests", "item_quality")

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "lifelong.npz", **{name: getattr(self, name) for name in self._ARRAYS})
        (folder / "params.json").write_text(json.dumps(self.params, indent=2, sort_keys=True))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "LifelongData":
        folder = Path(folder)
        if not (folder / "lifelong.npz").is_file():
            raise FileNotFoundError(f"{folder}: no lifelong.npz (write one with fusion data fetch lifelong-synthetic)")
        with np.load(folder / "lifelong.npz") as arrays:
            values = {name: arrays[name] for name in cls._ARRAYS if name in arrays.files}
        params = json.loads((folder / "params.json").read_text()) if (folder / "params.json").is_file() else {}
        return cls(**values, params=params)


_LIFELONG_CHUNK = 256  # users generated per step; fixed so a seed gives the same data on every machine


def _avoid_pairs(cate: np.ndarray, theme: np.ndarray, forbidden_cate: np.ndarray, forbidden_theme: np.ndarray,
                 num_themes: int, rng: np.random.Generator) -> None:
    """Redraw, in place, the theme of every entry whose (category, theme) is one of its row's forbidden pairs.

    ``cate``/``theme``: (c, n); ``forbidden_*``: (c, T). Terminates because every category keeps a theme that
    is not forbidden (see the targets' "free" theme)."""
    def clashes(key: np.ndarray, forbidden: np.ndarray) -> np.ndarray:
        hit = np.zeros(key.shape, dtype=bool)
        for j in range(forbidden.shape[-1]):
            hit |= key == forbidden[..., j : j + 1]
        return hit

    forbidden = forbidden_cate * num_themes + forbidden_theme  # (c, T)
    rows, cols = np.nonzero(clashes(cate * num_themes + theme, forbidden))
    while rows.size:
        theme[rows, cols] = rng.integers(0, num_themes, size=rows.size)
        still = clashes((cate[rows, cols] * num_themes + theme[rows, cols])[:, None], forbidden[rows])[:, 0]
        rows, cols = rows[still], cols[still]


def generate_lifelong(
    num_users: int = 2_000,
    history_length: int = 10_000,
    num_items: int = 2_000,
    num_cates: int = 20,
    num_interests: int = 4,
    relevant_per_target: int = 3,
    seed: int = 0,
    *,
    num_themes: int = 10,
    targets_per_user: int = 8,
    recent_window: int = 200,
    distance_bias: float = 2.0,
    mean_gap_hours: float = 2.0,
    start_timestamp: int = 1_500_000_000,
    popularity_exponent: float = 0.0,
    structure: str = "planted",
    themes_per_interest: int = 3,
    match_logit: float = 4.0,
    quality_std: float = 1.0,
    verbose: bool | None = None,
) -> LifelongData:
    """Lifelong behaviour histories whose targets depend on a few behaviours planted far back.

    The generative story (see data_cards/lifelong-synthetic.md):

    1. Items form a grid: ``num_cates`` categories × ``num_themes`` hidden themes × ``num_items / (num_cates ×
       num_themes)`` variants, then get shuffled ids. Only the category is visible; the theme is hidden.
    2. A user has ``num_interests`` categories with Dirichlet(1) weights (categories drawn with Zipf weights
       ``rank^-popularity_exponent`` without replacement, so some categories are far more common than others). Each of the ``history_length``
       background behaviours picks an interest by weight, a uniform theme and a variant in it (Zipf
       ``rank^-popularity_exponent`` over the variants: with an exponent > 0 item popularity is long-tailed, as in
       real logs; 0 draws them uniformly); gaps between
       behaviours are exponential with mean ``mean_gap_hours``.
    3. After the history the user is shown ``targets_per_user`` items with distinct (category, theme) pairs,
       categories from the user's interests (one theme per interest is never a target's, so background and
       decoys always have a theme left); each is positive with probability 1/2. Background behaviours never
       fall in a target's pair.
    4. For each target, ``relevant_per_target`` history positions are planted: for a positive, items of the
       target's category *and* theme (a different variant where there is one) — the relevant behaviours; for a
       negative, decoys of the same category and other themes. Positions avoid the last ``recent_window``
       behaviours (at most half the history) and have density ∝ (1 − p/H₀)^``distance_bias`` over the older
       positions p < H₀, so they sit mostly in the distant past.

    So the label is exactly "does the history hold the target's theme", category counts carry no signal, and a
    model must find the planted behaviours to beat chance. Deterministic for a given seed.

    ``structure="interests"`` draws histories whose themes can be learnt from co-occurrence instead (see
    :func:`_interest_chunk`): each user likes ``themes_per_interest`` themes in each of its interest categories, and
    the whole history comes from those themes; half the targets are of a liked theme, half of another theme of a
    liked category; the click is Bernoulli(σ(``match_logit`` · (the history holds the target's theme − ½) +
    quality)), the quality a fixed
    N(0, ``quality_std``²) logit per item that only the target's representation can carry. Nothing is planted:
    the relevant behaviours of a target are all the history's behaviours of its (category, theme).
    """
    total = num_cates * num_themes
    if num_items < total or num_items % total:
        suggestion = max(1, round(num_items / total)) * total
        raise ValueError(
            f"num_items ({num_items}) must be a multiple of num_cates × num_themes ({num_cates} × {num_themes} = "
            f"{total}); use e.g. num_items={suggestion}"
        )
    if not 1 <= num_interests <= num_cates:
        raise ValueError(f"num_interests must be in [1, num_cates={num_cates}], got {num_interests}")
    if num_themes < 2:
        raise ValueError(f"num_themes must be >= 2 (negatives need decoys of another theme), got {num_themes}")
    if not 1 <= targets_per_user <= num_interests * (num_themes - 1):
        raise ValueError(
            f"targets_per_user must be in [1, num_interests × (num_themes − 1) = {num_interests * (num_themes - 1)}] "
            f"(each interest keeps one theme no target uses), got {targets_per_user}"
        )
    if relevant_per_target < 1:
        raise ValueError(f"relevant_per_target must be >= 1, got {relevant_per_target}")
    planted = targets_per_user * relevant_per_target
    if history_length < 2 * planted:
        raise ValueError(
            f"history_length ({history_length}) must be at least 2 × targets_per_user × relevant_per_target = {2 * planted}"
        )
    if num_users < 1 or recent_window < 0 or mean_gap_hours <= 0:
        raise ValueError("num_users must be >= 1, recent_window >= 0 and mean_gap_hours > 0")
    if popularity_exponent < 0:
        raise ValueError(f"popularity_exponent must be >= 0 (0 = uniform popularity), got {popularity_exponent}")
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {list(STRUCTURES)}, got {structure!r}")
    if structure == "interests":
        if not 1 <= themes_per_interest < num_themes:
            raise ValueError(f"themes_per_interest must be in [1, num_themes − 1 = {num_themes - 1}] (a category keeps "
                             f"a theme the user does not like, for the other half of the targets), got {themes_per_interest}")
        liked, other = num_interests * themes_per_interest, num_interests * (num_themes - themes_per_interest)
        if not 1 <= targets_per_user <= 2 * min(liked, other):
            raise ValueError(f"targets_per_user must be in [1, 2 × min(liked themes {liked}, other themes {other}) = "
                             f"{2 * min(liked, other)}] (half liked, half not, all distinct), got {targets_per_user}")
        if quality_std < 0:
            raise ValueError(f"quality_std must be >= 0, got {quality_std}")

    params = dict(
        num_users=num_users, history_length=history_length, num_items=num_items, num_cates=num_cates,
        num_interests=num_interests, relevant_per_target=relevant_per_target, seed=seed, num_themes=num_themes,
        targets_per_user=targets_per_user, recent_window=recent_window, distance_bias=distance_bias,
        mean_gap_hours=mean_gap_hours, start_timestamp=start_timestamp,
    )
    if popularity_exponent:  # only when used, so the saved parameters of uniform data sets stay as they were
        params["popularity_exponent"] = popularity_exponent
    if structure != "planted":  # likewise: the planted data sets' parameters stay as they were
        params.update(structure=structure, themes_per_interest=themes_per_interest, match_logit=match_logit,
                      quality_std=quality_std)
    variants = num_items // total
    users, length, themes, k = num_users, history_length, num_themes, relevant_per_target
    targets = targets_per_user
    global_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    item_of_grid = global_rng.permutation(num_items)  # grid cell → item id − 1
    grid = np.arange(num_items)
    item_cate = np.zeros(num_items + 1, dtype=np.int64)
    item_theme = np.zeros(num_items + 1, dtype=np.int64)
    item_cate[item_of_grid + 1] = grid // (themes * variants) + 1
    item_theme[item_of_grid + 1] = (grid // variants) % themes

    hist_item = np.empty((users, length), dtype=np.int32)
    hist_timestamp = np.empty((users, length), dtype=np.int64)
    target_item = np.empty((users, targets), dtype=np.int64)
    target_timestamp = np.empty(users, dtype=np.int64)
    label = np.empty((users, targets), dtype=np.int8)
    planted_positions = np.empty((users, targets, k), dtype=np.int64)
    user_interests = np.empty((users, num_interests), dtype=np.int64)

    old_region = length - min(recent_window, length // 2)
    position = np.arange(old_region)
    log_weight = distance_bias * np.log1p(-position / old_region)
    gap_mean = mean_gap_hours * 3600.0
    variant_weight = np.arange(1, variants + 1, dtype=np.float64) ** -popularity_exponent
    variant_edges = np.cumsum(variant_weight / variant_weight.sum())[:-1]
    log_cate_weight = -popularity_exponent * np.log(np.arange(1, num_cates + 1, dtype=np.float64))

    def draw_variants(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        if not popularity_exponent:
            return rng.integers(0, variants, size=shape)
        return np.searchsorted(variant_edges, rng.random(shape), side="right")
    verbose = users * length >= 5_000_000 if verbose is None else verbose
    started = time.perf_counter()
    item_quality = np.zeros(num_items + 1, dtype=np.float64)
    if structure == "interests":
        item_quality[1:] = global_rng.normal(0.0, quality_std, size=num_items)
        planted_positions = np.empty((users, targets, 0), dtype=np.int64)
    for chunk, first in enumerate(range(0, users, _LIFELONG_CHUNK)):
        last = min(first + _LIFELONG_CHUNK, users)
        c = last - first
        rows = np.arange(c)[:, None]
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, chunk)))
        if popularity_exponent:  # Gumbel top-I: categories without replacement, ∝ their Zipf weight
            keys = log_cate_weight[None, :] - np.log(-np.log(rng.random((c, num_cates))))
            interests = np.argsort(-keys, axis=1)[:, :num_interests]  # (c, I) category − 1
        else:
            interests = np.argsort(rng.random((c, num_cates)), axis=1)[:, :num_interests]  # (c, I) category − 1
        weights = rng.dirichlet(np.ones(num_interests), size=c)
        which = _draw_by_weight(rng, weights, length)  # (c, H) interest of each behaviour
        cate = interests[rows, which]  # (c, H)
        if structure == "interests":
            item, t_item, t_label = _interest_chunk(rng, interests, which, cate, themes, themes_per_interest, targets,
                                                    match_logit, item_quality, item_of_grid, draw_variants, variants)
            hist_item[first:last] = item
            target_item[first:last] = t_item
            label[first:last] = t_label
            _finish_chunk(rng, first, last, length, gap_mean, start_timestamp, hist_timestamp, target_timestamp)
            user_interests[first:last] = interests + 1
            if verbose:
                progress(f"lifelong-synthetic: {last:,}/{users:,} users × {length:,} behaviours "
                         f"({time.perf_counter() - started:.1f} s)")
            continue
        theme = rng.integers(0, themes, size=(c, length))
        variant = draw_variants(rng, (c, length))

        # Targets: distinct (interest, theme) pairs per user, never the interest's "free" theme, so every
        # category keeps a theme that background behaviours and decoys can fall back on.
        free = rng.integers(0, themes, size=(c, num_interests))
        pairs = np.argsort(rng.random((c, num_interests * (themes - 1))), axis=1)[:, :targets]
        t_interest, slot = pairs // (themes - 1), pairs % (themes - 1)
        t_cate = interests[rows, t_interest]  # (c, T)
        t_theme = slot + (slot >= free[rows, t_interest])
        t_variant = draw_variants(rng, (c, targets))
        t_label = (rng.random((c, targets)) < 0.5).astype(np.int8)
        _avoid_pairs(cate, theme, t_cate, t_theme, themes, rng)

        # Planted positions: weighted sampling without replacement (Gumbel top-m) over the older region.
        keys = log_weight[None, :] - np.log(-np.log(rng.random((c, old_region))))
        chosen = np.argpartition(-keys, planted - 1, axis=1)[:, :planted]
        chosen = rng.permuted(chosen, axis=1).reshape(c, targets, k)
        p_cate = np.repeat(t_cate[:, :, None], k, axis=2)
        positive = t_label[:, :, None].astype(bool)
        p_theme = np.where(positive, t_theme[:, :, None], rng.integers(0, themes, size=(c, targets, k)))
        decoy = ~np.broadcast_to(positive, p_theme.shape)
        if variants > 1:
            other_variant = (t_variant[:, :, None] + rng.integers(1, variants, size=(c, targets, k))) % variants
        else:
            other_variant = np.repeat(t_variant[:, :, None], k, axis=2)
        p_variant = np.where(positive, other_variant, rng.integers(0, variants, size=(c, targets, k)))
        # Decoys must not land in any target's pair (their own included).
        d_mask = decoy.reshape(c, -1)
        d_cate = np.where(d_mask, p_cate.reshape(c, -1), -1)  # category −1: relevant entries never clash
        d_theme = p_theme.reshape(c, -1).copy()
        _avoid_pairs(d_cate, d_theme, t_cate, t_theme, themes, rng)
        p_theme = np.where(d_mask, d_theme, p_theme.reshape(c, -1)).reshape(c, targets, k)
        flat_pos = chosen.reshape(c, -1)
        cate[rows, flat_pos] = p_cate.reshape(c, -1)
        theme[rows, flat_pos] = p_theme.reshape(c, -1)
        variant[rows, flat_pos] = p_variant.reshape(c, -1)

        hist_item[first:last] = item_of_grid[(cate * themes + theme) * variants + variant] + 1
        target_item[first:last] = item_of_grid[(t_cate * themes + t_theme) * variants + t_variant] + 1
        _finish_chunk(rng, first, last, length, gap_mean, start_timestamp, hist_timestamp, target_timestamp)
        label[first:last] = t_label
        planted_positions[first:last] = chosen
        user_interests[first:last] = interests + 1
        if verbose:
            progress(f"lifelong-synthetic: {last:,}/{users:,} users × {length:,} behaviours "
                     f"({time.perf_counter() - started:.1f} s)")
    return LifelongData(
        hist_item=hist_item, hist_timestamp=hist_timestamp, target_item=target_item,
        target_timestamp=target_timestamp, label=label, planted_positions=planted_positions,
        item_cate=item_cate, item_theme=item_theme, user_interests=user_interests, item_quality=item_quality,
        params=params,
    )


def _draw_by_weight(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    """``(c, n)`` column indices drawn ∝ each row of ``weights`` (c, m)."""
    edges = np.cumsum(weights, axis=1)[:, :-1]
    pick = rng.random((weights.shape[0], n))
    which = np.zeros(pick.shape, dtype=np.int64)
    for i in range(edges.shape[1]):
        which += pick > edges[:, i : i + 1]
    return which


def _finish_chunk(rng: np.random.Generator, first: int, last: int, length: int, gap_mean: float, start_timestamp: int,
                  hist_timestamp: np.ndarray, target_timestamp: np.ndarray) -> None:
    """Timestamps of users ``first:last``: exponential gaps from a random start in the first month; the targets
    come one gap after the last behaviour."""
    c = last - first
    start = start_timestamp + rng.integers(0, 30 * 86_400, size=c)
    times = start[:, None] + np.cumsum(rng.exponential(gap_mean, size=(c, length)), axis=1).astype(np.int64)
    hist_timestamp[first:last] = times
    target_timestamp[first:last] = times[:, -1] + 1 + rng.exponential(gap_mean, size=c).astype(np.int64)


def _interest_chunk(rng: np.random.Generator, interests: np.ndarray, which: np.ndarray, cate: np.ndarray,
                    themes: int, liked_per_interest: int, targets: int, match_logit: float, item_quality: np.ndarray,
                    item_of_grid: np.ndarray, draw_variants, variants: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``interests`` structure for one chunk of c users: ``(hist_item (c, H), target_item (c, T), label (c, T))``.

    ``interests`` (c, I) category − 1, ``which`` (c, H) the interest of each behaviour, ``cate`` (c, H) its category.
    Each user likes ``liked_per_interest`` distinct themes of each interest category with Dirichlet(1) weights; a
    behaviour takes a liked theme of its category by weight and a variant by popularity. Targets: ⌊T/2⌋ distinct
    liked (category, theme) pairs and the rest distinct pairs of an interest category that the user does not like
    (never in the history), so category counts cannot tell them apart; click ~ Bernoulli(σ(match_logit · (the
    history holds the target's theme − ½) + quality of the target item)).
    """
    c, num_interests = interests.shape
    rows = np.arange(c)[:, None]
    length = which.shape[1]
    # (c, I, themes) a random order of each interest's themes: the first liked_per_interest are liked
    order = np.argsort(rng.random((c, num_interests, themes)), axis=2)
    liked = order[:, :, :liked_per_interest]  # (c, I, m)
    theme_weights = rng.dirichlet(np.ones(liked_per_interest), size=(c, num_interests))  # (c, I, m)
    pick = rng.random((c, length))
    edges = np.cumsum(theme_weights, axis=2)[rows, which][:, :, :-1]  # (c, H, m − 1)
    slot = (pick[:, :, None] > edges).sum(axis=2)  # (c, H) which liked theme
    theme = liked[rows, which, slot]
    variant = draw_variants(rng, (c, length))
    hist_item = item_of_grid[(cate * themes + theme) * variants + variant] + 1

    # targets: liked pairs (interest i, slot j) and unliked pairs (interest i, slot j ≥ m) of the theme order
    n_liked = targets // 2
    unliked_per_interest = themes - liked_per_interest
    liked_pick = np.argsort(rng.random((c, num_interests * liked_per_interest)), axis=1)[:, :n_liked]
    other_pick = np.argsort(rng.random((c, num_interests * unliked_per_interest)), axis=1)[:, : targets - n_liked]
    t_interest = np.concatenate([liked_pick // liked_per_interest, other_pick // unliked_per_interest], axis=1)
    t_slot = np.concatenate([liked_pick % liked_per_interest, liked_per_interest + other_pick % unliked_per_interest],
                            axis=1)
    t_theme = order[rows, t_interest, t_slot]  # (c, T)
    t_cate = interests[rows, t_interest]
    t_item = item_of_grid[(t_cate * themes + t_theme) * variants + draw_variants(rng, (c, targets))] + 1
    # a liked theme with a tiny weight can be absent from the history: the click follows what the history holds
    t_pair = t_cate * themes + t_theme
    in_history = np.stack([(cate * themes + theme == t_pair[:, j : j + 1]).any(axis=1) for j in range(targets)], axis=1)
    logit = match_logit * (in_history - 0.5) + item_quality[t_item]
    t_label = (rng.random((c, targets)) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
    shuffle = np.argsort(rng.random((c, targets)), axis=1)  # liked targets are not always the first ones
    return hist_item, t_item[rows, shuffle], t_label[rows, shuffle]


# The configuration `fusion data fetch lifelong-synthetic` writes to the cache.
LIFELONG_DEFAULTS: dict[str, Any] = {
    name: parameter.default for name, parameter in inspect.signature(generate_lifelong).parameters.items()
    if name not in ("verbose", "popularity_exponent", "structure", "themes_per_interest", "match_logit", "quality_std")
}


def fetch_lifelong(path: Path | None, dest: Path) -> Path:
    """A saved lifelong data set: the local folder ``path``, the cache, or a fresh one generated with the
    default parameters into the cache."""
    if path is not None:
        data = LifelongData.load(path)
        progress(f"lifelong-synthetic: {path} holds {data.num_users:,} users × {data.history_length:,} behaviours")
        return Path(path)
    params_file = dest / "params.json"
    if (dest / "lifelong.npz").is_file() and params_file.is_file() and json.loads(params_file.read_text()) == LIFELONG_DEFAULTS:
        progress(f"lifelong-synthetic: using the cache {dest}")
        return dest
    data = generate_lifelong(verbose=True)
    staging = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    data.save(staging)
    return replace_dir(staging, dest)
