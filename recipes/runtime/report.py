"""A self-contained HTML report: headings, text, tables and matplotlib figures inlined as base64 PNG.

One file, no external CSS, JavaScript, fonts or images, so a report can be mailed or archived as is::

    report = HtmlReport("DARE — explanation")
    report.heading("Modality Shapley values")
    report.text("Each bar is the average change in the score when the group is added.")
    report.figure(fig, caption="Shapley values per feature group")
    report.table(frame, caption="Top examples")
    report.save("report.html")
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

from recipes.runtime.subsets import SUBSET_MARK, subset_table

__all__ = ["HtmlReport"]

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1040px; margin: 2em auto;
       padding: 0 1.2em; color: #1f2328; line-height: 1.5; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2, h3 { margin-top: 1.6em; }
.meta { color: #656d76; font-size: .9em; }
figure { margin: 1.2em 0; text-align: center; }
figure img { max-width: 100%; height: auto; }
figcaption, caption { color: #656d76; font-size: .9em; margin: .4em 0; caption-side: bottom; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #d0d7de; padding: .3em .7em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f6f8fa; padding: .1em .3em; border-radius: 3px; font-size: .9em; }
"""


def _inline(text: str) -> str:
    """Escape HTML, then allow ``code`` and **bold**."""
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def _cell(value: Any) -> tuple[str, bool]:
    """(HTML text, is numeric) of one table cell."""
    if value is None:
        return "", False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN", True
        return (f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"), True
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value), True
    return html.escape(str(value)), False


class HtmlReport:
    """Collects report parts in order; :meth:`save` writes one self-contained HTML file."""

    def __init__(self, title: str, subtitle: str | None = None):
        self.title = title
        self.subtitle = subtitle
        self._parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> "HtmlReport":
        if not 1 <= level <= 6:
            raise ValueError(f"heading level must be 1..6, got {level}")
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def text(self, text: str) -> "HtmlReport":
        """Plain text, HTML-escaped: blank lines separate paragraphs, lines starting with ``- `` make a list,
        ``code`` and **bold** are kept."""
        for block in re.split(r"\n\s*\n", text.strip()):
            lines = [line.strip() for line in block.strip().splitlines()]
            if lines and all(line.startswith("- ") for line in lines):
                items = "".join(f"<li>{_inline(line[2:])}</li>" for line in lines)
                self._parts.append(f"<ul>{items}</ul>")
            elif lines:
                self._parts.append(f"<p>{_inline(' '.join(lines))}</p>")
        return self

    def html(self, raw_html: str) -> "HtmlReport":
        """A trusted HTML snippet, inserted as is (it must not reference external resources)."""
        self._parts.append(raw_html)
        return self

    def figure(self, fig: Any, caption: str | None = None, *, dpi: int = 110) -> "HtmlReport":
        """A matplotlib figure as an inline PNG; the figure is closed afterwards."""
        buffer = io.BytesIO()
        try:
            fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        finally:
            import matplotlib.pyplot as plt

            plt.close(fig)
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        alt = html.escape(caption or "figure")
        cap = f"<figcaption>{_inline(caption)}</figcaption>" if caption else ""
        self._parts.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{encoded}">{cap}</figure>')
        return self

    def table(self, data: Any, caption: str | None = None, *, max_rows: int = 200) -> "HtmlReport":
        """A table from a polars DataFrame, a list of dicts (one per row), a dict of equal-length lists (columns)
        or a plain dict (two columns: key, value). At most ``max_rows`` rows are shown."""
        columns, rows = self._rows(data)
        shown = rows[:max_rows]
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = []
        for row in shown:
            cells = []
            for value in row:
                text, numeric = _cell(value)
                cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
            body.append(f"<tr>{''.join(cells)}</tr>")
        note = f" (first {max_rows} of {len(rows)} rows)" if len(rows) > max_rows else ""
        cap = f"<caption>{_inline(caption)}{note}</caption>" if caption or note else ""
        self._parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")
        return self

    def metrics(self, metrics: Mapping[str, float], caption: str | None = None) -> "HtmlReport":
        """A run's held-out metrics: one table of the figures with every modality, then — when the run logged the
        modality-subset evaluation (``test/<name>@without_<m>``) — the robustness table, one row per metric and one
        column per set of modalities switched off."""
        plain = {k: v for k, v in metrics.items() if SUBSET_MARK not in k}
        if plain:
            self.table(plain, caption=caption)
        table = subset_table(dict(metrics))
        if table is not None:
            rows, columns, cells = table
            self.heading("Robustness to missing modalities", level=3)
            self.table([{"metric": row, **{c: cells.get((row, c)) for c in columns}} for row in rows],
                       caption="the same held-out rows with modalities switched off (`present` = False) at test time")
        return self

    @staticmethod
    def _rows(data: Any) -> tuple[list[str], list[list[Any]]]:
        if hasattr(data, "columns") and hasattr(data, "rows"):  # polars DataFrame
            return list(data.columns), [list(r) for r in data.rows()]
        if isinstance(data, Mapping):
            values = list(data.values())
            if values and all(isinstance(v, (list, tuple)) for v in values):
                lengths = {len(v) for v in values}
                if len(lengths) != 1:
                    raise ValueError(f"table columns must have equal lengths, got {sorted(lengths)}")
                return [str(k) for k in data], [list(r) for r in zip(*values)]
            return ["name", "value"], [[k, v] for k, v in data.items()]
        if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
            records = list(data)
            if not all(isinstance(r, Mapping) for r in records):
                raise ValueError("table() takes a polars DataFrame, a dict, or a list of dicts")
            columns: list[str] = []
            for record in records:
                columns += [str(k) for k in record if str(k) not in columns]
            return columns, [[r.get(c) for c in columns] for r in records]
        raise ValueError(f"table() takes a polars DataFrame, a dict, or a list of dicts; got {type(data).__name__}")

    def render(self) -> str:
        generated = datetime.now().strftime("%Y-%m-%d %H:%M")
        subtitle = f"<p class='meta'>{_inline(self.subtitle)}</p>" if self.subtitle else ""
        return (
            "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
            f"<title>{html.escape(self.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            f"<h1>{html.escape(self.title)}</h1>\n{subtitle}<p class='meta'>generated {generated} by fusion-suite</p>\n"
            + "\n".join(self._parts)
            + "\n</body>\n</html>\n"
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path
