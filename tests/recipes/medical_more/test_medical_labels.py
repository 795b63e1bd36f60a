"""Label extraction from report text and MeSH terms: negations, scope ends, synonyms."""
from __future__ import annotations

import pytest

from recipes.medical_more.labels import FINDINGS, extract_labels, mentions


@pytest.mark.parametrize("text, expected", [
    ("No pleural effusion or pneumothorax. Heart size normal.", {"cardiomegaly": 0, "effusion": 0, "opacity": 0, "normal": 1}),
    ("Mild cardiomegaly. No focal consolidation.", {"cardiomegaly": 1, "effusion": 0, "opacity": 0, "normal": 0}),
    ("No effusion, but there is a right basilar opacity.", {"cardiomegaly": 0, "effusion": 0, "opacity": 1, "normal": 0}),
    ("The heart is mildly enlarged. Small bilateral effusions.", {"cardiomegaly": 1, "effusion": 1, "opacity": 0, "normal": 0}),
    ("Resolved left lower lobe pneumonia.", {"cardiomegaly": 0, "effusion": 0, "opacity": 0, "normal": 1}),
    ("Lungs are clear without infiltrate. Negative for effusion.", {"cardiomegaly": 0, "effusion": 0, "opacity": 0, "normal": 1}),
    ("Enlarged cardiac silhouette; no consolidation", {"cardiomegaly": 1, "effusion": 0, "opacity": 0, "normal": 0}),
])
def test_negation_aware_labels(text, expected):
    assert extract_labels(text) == expected


def test_mesh_terms_count_even_when_text_is_silent():
    assert extract_labels("See prior.", ["Cardiomegaly/mild", "Pleural Effusion/bilateral"]) == {
        "cardiomegaly": 1, "effusion": 1, "opacity": 0, "normal": 0}
    # a MeSH term of another finding does not leak
    assert extract_labels("Normal chest.", ["Calcified Granuloma"])["normal"] == 1


def test_mentions_reports_both_polarities():
    assert mentions("No effusion on the right. Small effusion on the left.", "effusion") == (True, True)
    assert mentions("No effusion.", "effusion") == (False, True)
    assert mentions("", "effusion") == (False, False)


def test_findings_order_is_stable():
    assert FINDINGS == ("cardiomegaly", "effusion", "opacity", "normal")


def test_attributes_read_side_severity_and_details():
    from recipes.medical_more.labels import extract_attributes

    assert extract_attributes("Small left pleural effusion. Calcified granuloma. Moderate cardiomegaly.") == {
        "effusion_side": 1, "opacity_side": 0, "severity": 1, "granuloma": 1, "scoliosis": 0, "device": 0}
    assert extract_attributes("Bilateral opacities. No effusion. Right IJ catheter.", ["Scoliosis/mild"]) == {
        "effusion_side": 0, "opacity_side": 3, "severity": 0, "granuloma": 0, "scoliosis": 1, "device": 1}
    assert extract_attributes("No pacemaker. No right effusion.") == {
        "effusion_side": 0, "opacity_side": 0, "severity": 0, "granuloma": 0, "scoliosis": 0, "device": 0}
