"""The modality-subset table: how metrics are named when the test loop evaluates a recipe with some of its
modalities switched off (``test/<metric>@without_<m>[+<m>...]``), and how the model card and reports read them back.

No torch, no Lightning: the reports and the dashboards read it too.
"""
from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SUBSET_MARK", "subset_suffix", "subset_table"]

SUBSET_MARK = "@without_"


def subset_suffix(dropped: Iterable[str]) -> str:
    """``@without_ecg+report`` for the dropped modalities (sorted), ``""`` for none."""
    dropped = sorted(dropped)
    return f"{SUBSET_MARK}{'+'.join(dropped)}" if dropped else ""


def subset_table(metrics: dict[str, float]) -> tuple[list[str], list[str], dict[tuple[str, str], float]] | None:
    """The modality-subset table in ``metrics`` (``test/<name>@without_<m...>``): row names (metrics), column names
    (``all`` then each dropped set), and the values; None when the run logged none."""
    cells: dict[tuple[str, str], float] = {}
    columns: list[str] = []
    for key, value in metrics.items():
        if SUBSET_MARK not in key:
            continue
        name, _, dropped = key.partition(SUBSET_MARK)
        if name not in metrics:
            continue
        column = "without " + dropped.replace("+", ", ")
        cells[(name, column)] = value
        cells[(name, "all")] = metrics[name]
        if column not in columns:
            columns.append(column)
    if not cells:
        return None
    rows = sorted({name for name, _ in cells})
    return rows, ["all", *sorted(columns, key=lambda c: (c.count(","), c))], cells
