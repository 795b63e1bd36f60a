"""Where a scoring job may read files from: the data root, and the one function every recipe opens input paths with.

An input row names files (``xray_path``, ``audio_path``, ``image_path``…). Inside :func:`recipes.runtime.score.score_file`
those names are confined to a *data root* (``fusion score --data-root DIR``, by default the input file's folder):
a relative name is read relative to it, and a name that resolves outside it — ``../``, an absolute path
elsewhere, a symlink pointing out — is refused with a per-row :class:`RowInputError`. The message names the column
and the fix and never quotes anything read from a file, so a scoring table cannot be used to read server files or to
learn which ones exist.

Outside a scoring job (library use, a notebook) no root is set and :func:`resolve_input_path` only checks the
value's type. The dashboards save uploads under generated names in a temporary folder and score inside
``with data_root(folder):``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator

__all__ = ["RowInputError", "data_root", "current_data_root", "resolve_input_path"]

_ROOT: ContextVar[Path | None] = ContextVar("fusion_data_root", default=None)


class RowInputError(ValueError):
    """One row's input cannot be used; the message names the column and says what to fix."""


@contextmanager
def data_root(root: str | os.PathLike[str] | None) -> Iterator[Path | None]:
    """Confine :func:`resolve_input_path` to ``root`` (symlinks resolved) inside the ``with`` block; ``None`` lifts it."""
    resolved = None if root is None else Path(root).resolve(strict=False)
    if resolved is not None and not resolved.is_dir():
        raise NotADirectoryError(f"data root {root} is not a folder; pass --data-root with the folder the input's files live in")
    token = _ROOT.set(resolved)
    try:
        yield resolved
    finally:
        _ROOT.reset(token)


def current_data_root() -> Path | None:
    """The data root in force, or None outside a scoring job."""
    return _ROOT.get()


def resolve_input_path(value: Any, column: str) -> Path:
    """The file a row's ``column`` names, checked against the data root in force.

    Raises :class:`RowInputError` for a value that is not a path string (an int, a list, an empty string) and,
    under a data root, for a path that resolves outside it. Whether the file exists is left to the reader, whose
    error then names the file inside the root.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise RowInputError(
            f"{column}: expected a file path (text), got {type(value).__name__}; store {column} as a string column"
        )
    if not value.strip():
        raise RowInputError(f"{column}: empty path; give the file's path or leave {column} null when the row has none")
    if "\x00" in value:
        raise RowInputError(f"{column}: the path contains a NUL byte; give a plain file path")
    root = _ROOT.get()
    path = Path(value).expanduser() if root is None else Path(value)
    if root is None:
        return path
    resolved = (path if path.is_absolute() else root / path).resolve(strict=False)
    if not resolved.is_relative_to(root):
        raise RowInputError(
            f"{column}: {value!r} lies outside the data root {root} (after resolving '..' and symlinks); move the "
            f"file under the data root or pass --data-root with a folder that holds it"
        )
    return resolved
