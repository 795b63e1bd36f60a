"""Findings read from radiology reports: MeSH terms plus a negation-aware reading of the text.

A finding is positive when the report's MeSH terms name it, or when one of its phrases occurs in a sentence of
FINDINGS/IMPRESSION outside the scope of a negation cue ("no", "without", "negative for", "free of", "resolved"…).
A cue's scope runs from the cue to the end of its clause: a sentence end, or a contrast word ("but", "however",
"although", "except"). This is NegEx (Chapman et al., 2001) reduced to the pre-negation rule, enough for the
short, templated IU reports ("No pleural effusion or pneumothorax." is negative for effusion). ``normal`` is the
absence of every other finding.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = [
    "FINDINGS", "DISEASE_FINDINGS", "FINDING_PHRASES", "MESH_TERMS", "ATTRIBUTES", "extract_labels", "extract_attributes",
    "mentions", "sentences",
]

FINDINGS: tuple[str, ...] = ("cardiomegaly", "effusion", "opacity", "normal")
DISEASE_FINDINGS: tuple[str, ...] = FINDINGS[:-1]

FINDING_PHRASES: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (
        r"cardiomegaly", r"cardiac enlargement", r"enlarged (?:cardiac|heart)", r"enlargement of the (?:cardiac|heart)",
        r"heart (?:size )?is (?:mildly |moderately |markedly )?enlarged", r"cardiac silhouette is (?:mildly |moderately |markedly )?enlarged",
        r"heart size is (?:mildly |moderately |markedly )?(?:increased|enlarged)",
    ),
    "effusion": (r"effusions?",),
    "opacity": (
        r"opacit(?:y|ies)", r"consolidations?", r"infiltrates?", r"airspace disease", r"air space disease",
        r"pneumonia", r"airspace opacit(?:y|ies)",
    ),
}
MESH_TERMS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("cardiomegaly",),
    "effusion": ("pleural effusion",),
    "opacity": ("opacity", "consolidation", "infiltrate", "airspace disease", "pneumonia"),
}

_NEGATION = re.compile(
    r"\b(?:no|not|without|negative for|free of|resolved|resolution of|rather than|absence of|clear of|"
    r"no evidence of|no signs? of|neither|nor)\b"
)
_SCOPE_END = re.compile(r"\b(?:but|however|although|though|except|which|aside from|apart from)\b")
_SENTENCE = re.compile(r"(?<=[.;!?])\s+|\n+")
_PATTERNS = {name: re.compile(r"\b(?:" + "|".join(phrases) + r")\b") for name, phrases in FINDING_PHRASES.items()}


def sentences(text: str) -> list[str]:
    """Lower-cased sentences (split at ``.``, ``;``, ``!``, ``?`` and line breaks)."""
    return [s.strip() for s in _SENTENCE.split((text or "").lower()) if s.strip()]


def _negated(sentence: str, start: int) -> bool:
    """Whether a mention beginning at ``start`` lies in the scope of a negation cue before it."""
    before = sentence[:start]
    cues = list(_NEGATION.finditer(before))
    if not cues:
        return False
    # the last contrast word after the last cue ends the cue's scope ("no effusion, but cardiomegaly")
    return not _SCOPE_END.search(before, cues[-1].end())


def mentions(text: str, finding: str) -> tuple[bool, bool]:
    """``(affirmed, negated)``: whether ``text`` mentions ``finding`` outside / inside a negation's scope."""
    pattern = _PATTERNS[finding]
    affirmed = negated = False
    for sentence in sentences(text):
        for match in pattern.finditer(sentence):
            if _negated(sentence, match.start()):
                negated = True
            else:
                affirmed = True
    return affirmed, negated


def _mesh_positive(mesh: Iterable[str], finding: str) -> bool:
    terms = MESH_TERMS[finding]
    return any(any(m.lower().split("/")[0].strip() == t for t in terms) for m in mesh)


def extract_labels(text: str, mesh: Sequence[str] = ()) -> dict[str, int]:
    """``{finding: 0/1}`` for :data:`FINDINGS` from a report's FINDINGS + IMPRESSION text and its MeSH terms."""
    labels = {}
    for finding in DISEASE_FINDINGS:
        affirmed, _ = mentions(text, finding)
        labels[finding] = int(affirmed or _mesh_positive(mesh, finding))
    labels["normal"] = int(not any(labels[f] for f in DISEASE_FINDINGS))
    return labels


# Details beyond the findings that a radiograph would show, read from the same report (the synthetic radiograph
# draws them, so a report can be matched to its own image, not only to images with the same labels).
ATTRIBUTES: tuple[str, ...] = ("effusion_side", "opacity_side", "severity", "granuloma", "scoliosis", "device")
_SIDES = {"left": re.compile(r"\bleft\b"), "right": re.compile(r"\bright\b"), "both": re.compile(r"\bbilateral|both\b")}
_SEVERE = re.compile(r"\b(?:moderate|large|marked|markedly|severe|extensive|significant)\b")
_FEATURES = {
    "granuloma": (re.compile(r"\bgranulomas?\b|\bcalcified (?:nodule|granuloma)"), ("calcified granuloma", "granulomatous disease")),
    "scoliosis": (re.compile(r"\bscoliosis\b|\bcurvature of the (?:thoracic )?spine"), ("scoliosis",)),
    "device": (re.compile(r"\b(?:pacemaker|catheter|picc|port|sternotomy|wires?|clips?|tube)\b"),
               ("catheters, indwelling", "pacemaker, artificial", "medical device", "sternotomy", "surgical instruments")),
}


def _side(text: str, finding: str) -> int:
    """0 unknown, 1 left, 2 right, 3 both: the side named in the first affirmed sentence about ``finding``."""
    for sentence in sentences(text):
        match = _PATTERNS[finding].search(sentence)
        if match and not _negated(sentence, match.start()):
            if _SIDES["both"].search(sentence) or (_SIDES["left"].search(sentence) and _SIDES["right"].search(sentence)):
                return 3
            if _SIDES["left"].search(sentence):
                return 1
            if _SIDES["right"].search(sentence):
                return 2
    return 0


def extract_attributes(text: str, mesh: Sequence[str] = ()) -> dict[str, int]:
    """``{attribute: int}`` for :data:`ATTRIBUTES`: the side of an effusion / opacity (0 unknown, 1 left, 2 right,
    3 both), severity (1 when "moderate", "large", "severe"… describes an affirmed finding), and 0/1 for a calcified
    granuloma, scoliosis and a device (catheter, pacemaker, wires) named affirmatively in the text or the MeSH terms."""
    lowered = [m.lower().split("/")[0].strip() for m in mesh]
    attributes = {"effusion_side": _side(text, "effusion"), "opacity_side": _side(text, "opacity"), "severity": 0}
    for sentence in sentences(text):
        if _SEVERE.search(sentence) and any(_PATTERNS[f].search(sentence) for f in DISEASE_FINDINGS):
            attributes["severity"] = 1
    for name, (pattern, terms) in _FEATURES.items():
        affirmed = any((m := pattern.search(s)) and not _negated(s, m.start()) for s in sentences(text))
        attributes[name] = int(affirmed or any(t in lowered for t in terms))
    return attributes
