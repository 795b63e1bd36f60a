"""CHAT (CHILDES/TalkBank) transcripts as used by DementiaBank and ADReSS: keep what the participant said.

Only ``*PAR:`` tiers are kept (continuation lines that start with a tab belong to the tier above). CHAT codes
are removed — bracketed codes (``[/]`` repetition, ``[//]`` revision, ``[: word]``, ``[* m]``, ``[+ exc]``),
scope brackets ``<…>``, events ``&=laughs``, fragments ``&+wo``, unintelligible ``xxx``, terminators and time
stamps — while the markers the dementia literature counts stay as tokens: pauses ``(.)`` ``(..)`` ``(...)``
(a timed pause ``(1.5)`` becomes one of them by length) and fillers (``&uh``, ``&-um`` → ``&uh``, ``&um``).
Repeated and revised words stay too: they were spoken, and repetitions are themselves a marker.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ChatTranscript", "parse_chat", "read_chat", "clean_utterance", "PAUSE_TOKENS", "is_filler", "spoken_words"]

PAUSE_TOKENS = ("(.)", "(..)", "(...)")
_TIME_STAMP = re.compile(r"\x15[^\x15]*\x15|\b\d+_\d+\b")
_BRACKET_CODE = re.compile(r"\[[^\]]*\]")
_TIMED_PAUSE = re.compile(r"\((\d*\.?\d+)\)")
_TERMINATORS = re.compile(r"\+\.\.\.|\+/\.|\+//\.|\+!\?|\+\"/\.|\+\"\.|\+\.\.\?|\+/\?|\+//\?|\+\^|\+,|\+\+|\+<|\+\"")


@dataclass
class ChatTranscript:
    """A participant's speech from one CHAT file.

    ``utterances``: cleaned ``*PAR:`` utterances; ``text``: them joined by spaces; ``header``: the ``@`` lines
    (``@ID``, ``@Media`` …) by name, the ``@ID`` of the participant under ``"ID"``.
    """

    utterances: list[str]
    header: dict[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(u for u in self.utterances if u)

    @property
    def tokens(self) -> list[str]:
        return self.text.split()

    @property
    def pause_count(self) -> int:
        return sum(t in PAUSE_TOKENS for t in self.tokens)

    @property
    def filler_count(self) -> int:
        return sum(is_filler(t) for t in self.tokens)


def is_filler(token: str) -> bool:
    return token.startswith("&") and len(token) > 1 and token[1:].isalpha()


def _pause_for(seconds: float) -> str:
    return "(.)" if seconds < 0.5 else "(..)" if seconds < 2.0 else "(...)"


def _clean_word(word: str) -> str:
    if word in PAUSE_TOKENS:
        return word
    timed = _TIMED_PAUSE.fullmatch(word)
    if timed:
        return _pause_for(float(timed.group(1)))
    if word.startswith("&-") and word[2:].isalpha():  # CHAT 2020+: &-uh
        return "&" + word[2:].lower()
    if word.startswith("&"):
        return "&" + word[1:].lower() if word[1:].isalpha() else ""  # &=laughs, &+fragment, &*INV:… go
    if word.lower() in ("xxx", "yyy", "www") or word.startswith("0"):
        return ""
    word = word.split("@")[0]  # special forms: word@l, word@o
    word = word.replace("(", "").replace(")", "")  # omitted sounds: (be)cause → because
    word = re.sub(r"[‡„:^↑↓≠∾⁎⌈⌉⌊⌋“”\"]", "", word).replace("_", " ").replace("+", " ")
    word = word.strip(".,;?!")
    return word.lower() if re.search(r"[A-Za-z]", word) else ""


def clean_utterance(line: str) -> str:
    """One tier's text without CHAT codes; pauses and fillers kept as tokens."""
    line = _TIME_STAMP.sub(" ", line)
    line = _BRACKET_CODE.sub(" ", line)
    line = line.replace("<", " ").replace(">", " ")
    line = _TERMINATORS.sub(" ", line)
    line = re.sub(r"(\(\.{1,3}\))", r" \1 ", line)  # "word(.)" → "word (.)"
    words = [_clean_word(w) for w in line.split()]
    return " ".join(w for w in words if w)


def parse_chat(text: str, speaker: str = "PAR") -> ChatTranscript:
    """Parse CHAT ``text``; keep the ``*{speaker}:`` tiers. Raises ``ValueError`` when there is none."""
    tiers: list[tuple[str, str]] = []
    header: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.rstrip("\n")
        if line.startswith("\t") and tiers:
            tiers[-1] = (tiers[-1][0], tiers[-1][1] + " " + line.strip())
        elif line.startswith("*") and ":" in line:
            name, _, rest = line[1:].partition(":")
            tiers.append((name.strip(), rest.strip()))
        elif line.startswith("%"):
            tiers.append(("%", ""))  # dependent tier: its continuation lines are not speech
        elif line.startswith("@") and ":" in line:
            name, _, rest = line[1:].partition(":")
            rest = rest.strip()
            if name == "ID" and f"|{speaker}|" in rest:
                header["ID"] = rest
            elif name != "ID":
                header[name] = rest
    utterances = [clean_utterance(body) for name, body in tiers if name == speaker]
    if not utterances:
        raise ValueError(f"no *{speaker}: lines in the transcript; a CHAT file of the participant's speech is expected")
    return ChatTranscript([u for u in utterances if u], header)


#: a CHAT file of one picture description is a few kB; anything past this is not one
MAX_CHAT_BYTES = 4 * 2**20


def read_chat(path: str | Path, speaker: str = "PAR") -> ChatTranscript:
    """:func:`parse_chat` of a ``.cha`` file (UTF-8; errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such CHAT file; check the cha_path column")
    if path.stat().st_size > MAX_CHAT_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size / 2**20:.0f} MB is far more than a CHAT transcript of one "
                         f"session (at most {MAX_CHAT_BYTES // 2**20} MB read); check the cha_path column")
    try:
        return parse_chat(path.read_text(encoding="utf-8", errors="replace"), speaker)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def spoken_words(text: str) -> list[str]:
    """The words a listener hears: pauses dropped, fillers without their ``&``."""
    return [t[1:] if is_filler(t) else t for t in text.split() if t not in PAUSE_TOKENS]
