"""What the four reliability suites share: a :class:`Case` (one malformed input and its exact outcome), the record of
the files a scoring job opens, and the two checks every suite makes on it — nothing outside the data root was opened,
and no message quotes a secret or a byte of a file.

A case's ``changes`` may hold ``"{name}"`` placeholders for paths only known once the files are built (an absolute
path outside the root, say); :func:`fill` puts them in. Cases are module-level lists, so that each test is
parametrised over the cases themselves, with their names as ids.
"""
from __future__ import annotations

import contextlib
import os
import struct
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SECRET = "SECRET-0123456789"  # written into files outside the root and into files that are not what they claim
FILE_TEXT = "hello, I am text"  # the start of a text file posing as a binary one
LEAKS = (SECRET, "root:x:0", FILE_TEXT)  # none may appear in an error or warning


@dataclass(frozen=True)
class Case:
    """One input row: ``changes`` to the good row and the ``outcome`` — ``score`` (``expect``: what its warnings
    name, in order) or ``error`` (``expect``: texts the error must contain: the column and the fix)."""

    name: str
    changes: dict = field(default_factory=dict)
    outcome: str = "score"  # "score" | "error"
    expect: tuple[str, ...] = ()

    @property
    def malformed(self) -> bool:
        """Not one of the well-formed controls: it errs or warns."""
        return self.outcome == "error" or bool(self.expect)


def fill(changes: dict, places: dict[str, str]) -> dict:
    """``changes`` with each ``"{name}"`` value replaced by ``places[name]``."""
    return {k: places[v[1:-1]] if isinstance(v, str) and v.startswith("{") and v.endswith("}") else v
            for k, v in changes.items()}


def ids(cases: Iterable[Case]) -> list[str]:
    return [case.name for case in cases]


_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # an audit hook cannot be removed; it records only inside record_opens()


@contextlib.contextmanager
def record_opens() -> Iterator[list[str]]:
    """Collect every file this process opens inside the block (``open`` audit events)."""
    global _OPENED
    _OPENED = opened = []
    try:
        yield opened
    finally:
        _OPENED = None


def assert_confined(opened: list[str], root: Path, outside: Path) -> None:
    """The job read under ``root`` (so the record is live) and opened nothing under ``outside`` nor /etc/passwd."""
    assert any(Path(p).resolve().is_relative_to(root) for p in opened), "the audit hook saw none of the job's reads"
    escaped = [p for p in opened if Path(p).resolve().is_relative_to(outside) or Path(p).resolve() == Path("/etc/passwd")]
    assert escaped == []


def assert_no_leak(texts: Iterable[str | None], extra: tuple[str, ...] = ()) -> None:
    """There are messages, and none quotes a secret or the content of a file that could not be parsed."""
    texts = [t for t in texts if t]
    assert texts
    leaked = [t for t in texts if any(s in t for s in (*LEAKS, *extra))]
    assert leaked == []


def png_header(width: int, height: int, color_type: int = 0) -> bytes:
    """A PNG that declares ``width``×``height`` pixels and holds almost nothing (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
