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


def _attributes(**set_to):
    from recipes.medical_more.labels import ATTRIBUTES

    unknown = set(set_to) - set(ATTRIBUTES)
    assert not unknown, unknown
    return {name: set_to.get(name, 0) for name in ATTRIBUTES}


def test_attributes_read_side_severity_and_details():
    from recipes.medical_more.labels import extract_attributes

    assert extract_attributes("Small left pleural effusion. Calcified granuloma. Moderate cardiomegaly.") == _attributes(
        effusion_side=1, severity=1, granuloma=1)
    assert extract_attributes("Bilateral opacities. No effusion. Right IJ catheter.", ["Scoliosis/mild"]) == _attributes(
        opacity_side=3, scoliosis=1, device=1)
    assert extract_attributes("No pacemaker. No right effusion.") == _attributes()


@pytest.mark.parametrize("text, mesh, expected", [
    ("Left-sided pacemaker with leads in the right atrium and ventricle. Median sternotomy wires.", [],
     dict(pacemaker=1, sternotomy=1)),
    ("Lungs are hyperexpanded consistent with COPD. Calcified granuloma.", [], dict(hyperinflation=1, granuloma=1)),
    ("Low lung volumes with bibasilar atelectasis.", [], dict(low_volumes=1, atelectasis=1, atelectasis_side=3)),
    ("Streaky right basilar airspace disease, likely atelectasis.", [], dict(opacity_side=2, atelectasis=1, atelectasis_side=2)),
    ("Tortuous, calcified thoracic aorta. Degenerative changes of the thoracic spine.", [], dict(aorta=1, degenerative=1)),
    ("Large hiatal hernia. Cholecystectomy clips.", [], dict(hernia=1, clips=1)),
    ("Heart size is at the upper limits of normal. Mild pulmonary vascular congestion.", [], dict(borderline_heart=1, edema=1)),
    ("Old healed right rib fractures. Apical pleural-parenchymal scarring.", [], dict(fracture=1, scarring=1)),
    ("3 mm noncalcified nodule in the left upper lobe.", [], dict(nodule=1)),
    ("No pulmonary nodules. No edema. No acute fracture. No hiatal hernia.", [], dict()),
    ("The lungs are clear.", ["Pulmonary Disease, Chronic Obstructive", "Pulmonary Atelectasis/base/left"],
     dict(hyperinflation=1, atelectasis=1)),
    ("Borderline cardiomegaly. The heart is enlarged.", [], dict(severity=0)),
])
def test_attributes_details(text, mesh, expected):
    from recipes.medical_more.labels import extract_attributes

    assert extract_attributes(text, mesh) == _attributes(**expected)
