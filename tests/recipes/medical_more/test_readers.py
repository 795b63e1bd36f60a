"""Real-format loaders on fixtures written in the exact formats: DICOM/PNG/JPG radiographs, WFDB and DICOM ECGs,
IU XML and MIMIC-style reports."""
from __future__ import annotations

import numpy as np
import pytest

from recipes.medical_more.cohort import LEADS, patient_rng, synthesize_ecg
from recipes.medical_more.readers import (
    InputFileError,
    load_ecg,
    load_xray,
    normalise_lead_name,
    parse_report_text,
    read_iu_report,
    write_ecg_dicom,
    write_ecg_wfdb,
    write_xray_dicom,
    write_xray_png,
)


@pytest.fixture(scope="module")
def gradient_image() -> np.ndarray:
    lin = np.linspace(0.0, 1.0, 32, dtype=np.float32)
    return np.outer(lin, np.ones(32, dtype=np.float32))  # dark top row, bright bottom row


@pytest.mark.parametrize("bits", [12, 16])
def test_dicom_monochrome2_round_trip(tmp_path, gradient_image, bits):
    path = write_xray_dicom(gradient_image, tmp_path / "x.dcm", bits_stored=bits)
    np.testing.assert_allclose(load_xray(path, 32), gradient_image, atol=2e-3)


def test_dicom_monochrome1_is_inverted_back(tmp_path, gradient_image):
    path = write_xray_dicom(gradient_image, tmp_path / "x.dcm", bits_stored=12, monochrome1=True)
    image = load_xray(path, 32)
    assert image[0].mean() < 0.05 and image[-1].mean() > 0.95  # dense (bright) stays at the bottom
    np.testing.assert_allclose(image, gradient_image, atol=2e-3)


def test_dicom_voi_window_is_applied(tmp_path, gradient_image):
    # a window over the middle half of the 12-bit range: the outer quarters saturate
    path = write_xray_dicom(gradient_image, tmp_path / "x.dcm", bits_stored=12, window=(2047.5, 2047.5))
    image = load_xray(path, 32)
    assert image[:7].max() == 0.0 and image[-7:].min() == 1.0
    np.testing.assert_allclose(image[16], (gradient_image[16] - 0.25) / 0.5, atol=3e-3)


@pytest.mark.parametrize("bits", [8, 16])
def test_png_round_trip_and_resize(tmp_path, gradient_image, bits):
    path = write_xray_png(gradient_image, tmp_path / "x.png", bits=bits)
    np.testing.assert_allclose(load_xray(path, 32), gradient_image, atol=3e-3)
    small = load_xray(path, 16)
    assert small.shape == (16, 16) and small[0].mean() < small[-1].mean()


def test_jpg_rgb_is_read_as_grey(tmp_path, gradient_image):
    from PIL import Image

    rgb = np.repeat((gradient_image * 255).astype(np.uint8)[..., None], 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=95)
    image = load_xray(tmp_path / "x.jpg", 32)
    assert image.shape == (32, 32)
    np.testing.assert_allclose(image, gradient_image, atol=0.03)


def test_xray_errors_name_the_file_and_fix(tmp_path):
    with pytest.raises(InputFileError, match="no such X-ray file"):
        load_xray(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(InputFileError, match=r"bad\.png.*PNG"):
        load_xray(tmp_path / "bad.png")
    (tmp_path / "x.tif").write_bytes(b"II*")
    with pytest.raises(InputFileError, match="DICOM"):
        load_xray(tmp_path / "x.tif")


@pytest.fixture(scope="module")
def ecg_500hz() -> np.ndarray:
    return synthesize_ecg({"cardiomegaly": 1}, patient_rng("ecg-fixture"), sampling_rate=500)


def test_wfdb_ptbxl_layout_with_shuffled_leads_is_reordered_and_resampled(tmp_path, ecg_500hz):
    order = [5, 0, 11, 3, 1, 2, 4, 6, 7, 8, 9, 10]
    base = write_ecg_wfdb(ecg_500hz[order], tmp_path / "records500" / "00000" / "00001_hr", 500,
                          leads=tuple(LEADS[i].upper() for i in order))  # PTB-XL spells AVR, AVL, AVF
    assert base.with_suffix(".hea").is_file() and base.with_suffix(".dat").is_file()
    signal = load_ecg(base, sampling_rate=100, num_samples=1000)
    assert signal.shape == (12, 1000)
    expected = ecg_500hz[:, ::5]
    # resampling smooths the QRS peaks a little; the lead order and the waveform must survive
    correlations = [np.corrcoef(signal[i], expected[i])[0, 1] for i in range(12)]
    assert min(correlations) > 0.9


def test_wfdb_same_rate_is_exact_and_short_records_are_padded(tmp_path):
    signal = synthesize_ecg({}, patient_rng("short"), sampling_rate=100)[:, :600]
    base = write_ecg_wfdb(signal, tmp_path / "rec", 100)
    loaded = load_ecg(base, 100, 1000)
    np.testing.assert_allclose(loaded[:, :600], signal, atol=1e-3)
    assert np.all(loaded[:, 600:] == 0)


def test_dicom_waveform_is_read_in_millivolts(tmp_path, ecg_500hz):
    reversed_leads = tuple(reversed(LEADS))
    path = write_ecg_dicom(ecg_500hz[::-1].copy(), tmp_path / "ecg.dcm", 500, leads=reversed_leads)
    signal = load_ecg(path, sampling_rate=500, num_samples=5000)
    np.testing.assert_allclose(signal, ecg_500hz, atol=1e-3)


def test_ecg_errors(tmp_path, ecg_500hz):
    with pytest.raises(InputFileError, match="no WFDB header"):
        load_ecg(tmp_path / "nothing")
    base = write_ecg_wfdb(ecg_500hz[:6], tmp_path / "limb", 500, leads=LEADS[:6])
    with pytest.raises(InputFileError, match=r"lacks lead\(s\) \['V1'"):
        load_ecg(base)
    assert normalise_lead_name("Lead aVR") == "aVR" and normalise_lead_name("AVL") == "aVL"
    assert normalise_lead_name("MLII") is None


IU_XML = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR9999"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">Chest pain.</AbstractText>
<AbstractText Label="FINDINGS">The heart is enlarged. No pleural effusion.</AbstractText>
<AbstractText Label="IMPRESSION">Cardiomegaly.</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH><major>Cardiomegaly/mild</major><automatic>Heart</automatic></MeSH>
<parentImage id="CXR9999_IM-0001-1001"><figureId>F1</figureId></parentImage></eCitation>
"""


def test_iu_xml_report(tmp_path):
    (tmp_path / "9999.xml").write_text(IU_XML)
    report = read_iu_report(tmp_path / "9999.xml")
    assert report.uid == "CXR9999" and report.indication == "Chest pain."
    assert report.mesh == ["Cardiomegaly/mild"] and report.images == ["CXR9999_IM-0001-1001"]
    assert report.text == "FINDINGS: The heart is enlarged. No pleural effusion. IMPRESSION: Cardiomegaly."
    (tmp_path / "bad.xml").write_text("<eCitation>")
    with pytest.raises(InputFileError, match="IU report XML"):
        read_iu_report(tmp_path / "bad.xml")


def test_mimic_style_text():
    text = ("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  Cough.\n\n"
            " FINDINGS:  Heart size is mildly enlarged.  No effusion.\n\n IMPRESSION:  Mild cardiomegaly.\n")
    sections = parse_report_text(text)
    assert sections["findings"] == "Heart size is mildly enlarged. No effusion."
    assert sections["impression"] == "Mild cardiomegaly."
    assert sections["indication"] == "Cough."
    assert parse_report_text("free text without headings") == {"findings": "free text without headings"}
