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


# Details beyond the findings that a radiograph (and sometimes an ECG) would show, read from the same report: the
# synthetic modalities draw them, so a report can be matched to its own image and signal, not only to the images of
# every patient with the same findings. Side attributes are 0 unknown, 1 left, 2 right, 3 both; the rest are 0/1.
ATTRIBUTES: tuple[str, ...] = (
    "effusion_side", "opacity_side", "severity", "granuloma", "scoliosis", "device", "pacemaker", "sternotomy",
    "clips", "hyperinflation", "low_volumes", "atelectasis", "atelectasis_side", "aorta", "degenerative", "hernia",
    "nodule", "edema", "borderline_heart", "fracture", "scarring",
)
_SIDES = {"left": re.compile(r"\bleft\b"), "right": re.compile(r"\bright\b"), "both": re.compile(r"\b(?:bilateral|bibasilar|bibasal|both)\b")}
_SEVERE = re.compile(r"\b(?:moderate|large|marked|markedly|severe|extensive|significant)\b")
# attribute → (text pattern, MeSH terms); a detail counts when the pattern occurs outside a negation's scope in some
# sentence, or a MeSH term (the part before "/") names it
_FEATURES: dict[str, tuple[re.Pattern[str], tuple[str, ...]]] = {
    "granuloma": (re.compile(r"\bgranulomas?\b|\bcalcified (?:nodules?|granulomas?)"),
                  ("calcified granuloma", "granulomatous disease", "granuloma")),
    "scoliosis": (re.compile(r"\bscoliosis\b|\bcurvature of the (?:thoracic )?spine"), ("scoliosis",)),
    "device": (re.compile(r"\b(?:catheters?|picc|port-?a-?cath|port|(?:central|venous|ij|subclavian|jugular) line|"
                          r"(?:endotracheal|nasogastric|ng|feeding|chest) tubes?)\b"),
               ("catheters, indwelling", "tube, inserted", "medical device")),
    "pacemaker": (re.compile(r"\b(?:pacemaker|pacer|aicd|defibrillator|pacing (?:leads?|wires?)|(?:cardiac|transvenous) leads?)\b"),
                  ("pacemaker, artificial", "defibrillators, implantable", "implanted medical device")),
    "sternotomy": (re.compile(r"\b(?:sternotomy|sternal (?:wires?|sutures?)|cabg|bypass graft(?:ing)?)\b"), ()),
    "clips": (re.compile(r"\b(?:surgical |vascular )?clips?\b|\bstaples\b|\bcholecystectomy\b"), ("surgical instruments",)),
    "hyperinflation": (re.compile(r"hyperinflat\w*|hyperexpan\w*|\bemphysema\w*|\bcopd\b|chronic obstructive|"
                                  r"flatten\w* (?:of )?(?:the )?(?:hemi)?diaphragms?|hyperlucen\w*"),
                       ("emphysema", "pulmonary emphysema", "pulmonary disease, chronic obstructive", "lung, hyperlucent")),
    "low_volumes": (re.compile(r"\blow (?:lung )?volumes?\b|hypoinflat\w*|\b(?:poor|shallow) inspiration"), ()),
    "atelectasis": (re.compile(r"\batelecta\w*"), ("pulmonary atelectasis",)),
    "aorta": (re.compile(r"\btortu\w*|\bectatic\b|\bectasia\b|\bunfold\w*|aortic (?:knob |arch )?calcif\w*|"
                         r"calcified aort\w*|\batherosclero\w*"),
              ("atherosclerosis", "aorta", "aorta, thoracic")),
    "degenerative": (re.compile(r"\bdegenerative\b|\bspondylo\w*|\bosteophyt\w*|\bkyphosis\b|\bkyphotic\b|\bdish\b"),
                     ("osteophyte", "spondylosis", "kyphosis", "arthritis")),
    "hernia": (re.compile(r"\bhiatal hernia|\bhiatus hernia"), ("hernia, hiatal",)),
    "nodule": (re.compile(r"(?<!\bcalcified )\bnodul\w*|\bmass(?:es)?\b"), ("nodule", "mass")),
    "edema": (re.compile(r"\bedema\b|(?:vascular|pulmonary) congestion|cephalization|kerley"),
              ("pulmonary congestion", "pulmonary edema", "heart failure")),
    "borderline_heart": (re.compile(r"(?:heart|cardiac|cardiomediastinal)[^.;]*(?:upper limits? of normal|borderline|"
                                    r"top(?:-| )normal|at the upper)|(?:borderline|top(?:-| )normal)[^.;]*(?:heart|cardiac)"),
                         ()),
    "fracture": (re.compile(r"\bfractur\w*"), ("fractures, bone",)),
    "scarring": (re.compile(r"\bscar\w*|\bfibros\w*|\bfibrotic\b|\bcicatri\w*"), ("cicatrix", "pulmonary fibrosis")),
}


def _side(text: str, pattern: re.Pattern[str]) -> int:
    """0 unknown, 1 left, 2 right, 3 both: the side named in the first affirmed sentence matching ``pattern``."""
    for sentence in sentences(text):
        match = pattern.search(sentence)
        if match and not _negated(sentence, match.start()):
            if _SIDES["both"].search(sentence) or (_SIDES["left"].search(sentence) and _SIDES["right"].search(sentence)):
                return 3
            if _SIDES["left"].search(sentence):
                return 1
            if _SIDES["right"].search(sentence):
                return 2
    return 0


def extract_attributes(text: str, mesh: Sequence[str] = ()) -> dict[str, int]:
    """``{attribute: int}`` for :data:`ATTRIBUTES`: the side of an effusion, opacity or atelectasis (0 unknown, 1 left,
    2 right, 3 both), severity (1 when "moderate", "large", "severe"… describes an affirmed finding), and 0/1 for each
    detail of ``_FEATURES`` (a granuloma, a pacemaker, hyperinflation…) named affirmatively in the text or the MeSH
    terms. ``borderline_heart`` is 0 when the heart is called enlarged (that is cardiomegaly)."""
    lowered = [m.lower().split("/")[0].strip() for m in mesh]
    attributes = {"effusion_side": _side(text, _PATTERNS["effusion"]), "opacity_side": _side(text, _PATTERNS["opacity"]),
                  "severity": 0}
    for sentence in sentences(text):
        if _SEVERE.search(sentence) and any(_PATTERNS[f].search(sentence) for f in DISEASE_FINDINGS):
            attributes["severity"] = 1
    for name, (pattern, terms) in _FEATURES.items():
        affirmed = any(not _negated(s, m.start()) for s in sentences(text) for m in pattern.finditer(s))
        attributes[name] = int(affirmed or any(t in lowered for t in terms))
    attributes["atelectasis_side"] = _side(text, _FEATURES["atelectasis"][0]) if attributes["atelectasis"] else 0
    if mentions(text, "cardiomegaly")[0]:
        attributes["borderline_heart"] = 0
    return {name: attributes[name] for name in ATTRIBUTES}
