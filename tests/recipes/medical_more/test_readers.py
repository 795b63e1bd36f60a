"""Real-format loaders on fixtures written in the exact formats: DICOM/PNG/JPG radiographs, WFDB and DICOM ECGs,
IU XML and MIMIC-style reports."""
from __future__ import annotations

import numpy as np
import pytest

from recipes.medical_more.cohort import LEADS, patient_rng, synthesize_ecg, synthesize_xray
from recipes.medical_more.readers import (
    INTENSITY_PERCENTILES,
    InputFileError,
    load_ecg,
    load_xray,
    normalise_intensity,
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


def _reference_scaling(image: np.ndarray) -> np.ndarray:
    """MONAI's ScaleIntensityRangePercentiles at the readers' percentiles: the reference the readers must match."""
    from monai.transforms import ScaleIntensityRangePercentiles

    low, high = INTENSITY_PERCENTILES
    return np.asarray(ScaleIntensityRangePercentiles(low, high, 0.0, 1.0, clip=True)(image[None].astype(np.float32)))[0]


@pytest.fixture(scope="module")
def radiograph() -> np.ndarray:
    return synthesize_xray({"cardiomegaly": 1, "effusion": 1, "effusion_side": 1}, patient_rng("xray-fixture"), 64)


def test_normalise_intensity_matches_monai_per_image(radiograph, gradient_image):
    stack = np.stack([radiograph, 0.3 + 0.2 * radiograph, np.full((64, 64), 0.5, np.float32)])
    scaled = normalise_intensity(stack)
    np.testing.assert_allclose(scaled[0], _reference_scaling(radiograph), atol=1e-5)
    np.testing.assert_allclose(scaled[1], scaled[0], atol=1e-5)  # an affine change of exposure changes nothing
    assert np.all(scaled[2] == 0.0)  # a flat image has no contrast to stretch
    np.testing.assert_allclose(normalise_intensity(gradient_image), _reference_scaling(gradient_image), atol=1e-5)


@pytest.mark.parametrize("bits", [8, 12, 16])
def test_dicom_monochrome2_is_scaled_by_its_percentiles(tmp_path, gradient_image, bits):
    path = write_xray_dicom(gradient_image, tmp_path / "x.dcm", bits_stored=bits)
    np.testing.assert_allclose(load_xray(path, 32), _reference_scaling(gradient_image), atol=4e-3 if bits == 8 else 1e-3)


def test_dicom_monochrome1_is_inverted_back(tmp_path, gradient_image):
    path = write_xray_dicom(gradient_image, tmp_path / "x.dcm", bits_stored=12, monochrome1=True)
    image = load_xray(path, 32)
    assert image[0].mean() < 0.05 and image[-1].mean() > 0.95  # dense (bright) stays at the bottom
    np.testing.assert_allclose(image, _reference_scaling(gradient_image), atol=1e-3)


def test_15_bit_monochrome1_with_a_full_range_window_is_not_washed_out(tmp_path, radiograph):
    """A real radiograph's pixels fill a narrow part of a 15-bit range whose VOI window spans nearly all of it: the
    window-based reading gave a mean near 0.75 with the lungs mid-grey; percentiles give the trained contrast."""
    stored = 0.35 + 0.3 * radiograph  # what the detector used of its range
    path = write_xray_dicom(stored, tmp_path / "x.dcm", bits_stored=15, monochrome1=True, window=(16383.5, 32000.0))
    image = load_xray(path, 64)
    expected = normalise_intensity(radiograph)
    np.testing.assert_allclose(image, expected, atol=2e-3)
    np.testing.assert_allclose(image, _reference_scaling(radiograph), atol=2e-3)
    lung = image[20:40, 8:20]  # the patient's right lung field, away from the heart: dark
    assert lung.mean() < 0.35 and abs(image.mean() - expected.mean()) < 1e-3


def test_voi_window_and_bit_depth_do_not_change_the_image(tmp_path, radiograph):
    plain = load_xray(write_xray_dicom(radiograph, tmp_path / "a.dcm", bits_stored=12), 64)
    windowed = load_xray(write_xray_dicom(radiograph, tmp_path / "b.dcm", bits_stored=16, window=(30000.0, 4000.0)), 64)
    png = load_xray(write_xray_png(radiograph, tmp_path / "c.png", bits=16), 64)
    np.testing.assert_allclose(windowed, plain, atol=1e-3)
    np.testing.assert_allclose(png, plain, atol=1e-3)


@pytest.mark.parametrize("bits", [8, 16])
def test_png_is_scaled_and_resized(tmp_path, gradient_image, bits):
    path = write_xray_png(gradient_image, tmp_path / "x.png", bits=bits)
    np.testing.assert_allclose(load_xray(path, 32), _reference_scaling(gradient_image), atol=5e-3)
    small = load_xray(path, 16)
    assert small.shape == (16, 16) and small[0].mean() < small[-1].mean()


@pytest.mark.parametrize("shape, axis", [((32, 64), 0), ((64, 32), 1)])
def test_a_non_square_radiograph_keeps_its_aspect_and_is_padded(tmp_path, shape, axis):
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 1.0, size=shape).astype(np.float32)
    image[0, 0], image[-1, -1] = 0.0, 1.0
    square = load_xray(write_xray_png(image, tmp_path / "x.png", bits=16), 32)
    assert square.shape == (32, 32)
    pad = [slice(None), slice(None)]
    pad[axis] = slice(0, 8)
    assert np.all(square[tuple(pad)] == 0.0)  # 8 padded rows (or columns) at each side: 32 → 16 centred
    pad[axis] = slice(24, 32)
    assert np.all(square[tuple(pad)] == 0.0)
    content = [slice(None), slice(None)]
    content[axis] = slice(8, 24)
    from monai.transforms import Resize

    expected = np.asarray(Resize((16, 32) if axis == 0 else (32, 16), mode="area")(normalise_intensity(image)[None]))[0]
    np.testing.assert_allclose(square[tuple(content)], np.clip(expected, 0, 1), atol=2e-3)  # not stretched


def test_jpg_rgb_is_read_as_grey(tmp_path, gradient_image):
    from PIL import Image

    rgb = np.repeat((gradient_image * 255).astype(np.uint8)[..., None], 3, axis=-1)
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=95)
    image = load_xray(tmp_path / "x.jpg", 32)
    assert image.shape == (32, 32)
    np.testing.assert_allclose(image, _reference_scaling(gradient_image), atol=0.03)


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


VENDOR = ("Lead I (Einthoven)", "Lead II", "Lead III (Einthoven)", "Lead aVR (Goldberger)", "Lead aVL (Goldberger)",
          "Lead aVF (Goldberger)", *(f"Lead V{k} (Chest)" for k in range(1, 7)))
PTBXL = ("I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
OTHER = ("MDC_ECG_LEAD_I", "ECG Lead II", "DIII", "lead-avr", "Lead_aVL", "aVF lead", "C1", "v2", "V3 ", "Lead V4",
         "MDC_ECG_LEAD_V5", "V6 (chest)")


@pytest.mark.parametrize("spellings", [VENDOR, PTBXL, OTHER, LEADS], ids=["vendor", "ptbxl", "other", "standard"])
def test_lead_names_in_every_spelling(spellings):
    assert tuple(normalise_lead_name(name) for name in spellings) == LEADS


@pytest.mark.parametrize("name", ["MLII", "V7", "Lead X", "aVX", "", "Lead", "12", "ECG"])
def test_names_of_no_standard_lead(name):
    assert normalise_lead_name(name) is None


def test_scp_ecg_codes_name_a_lead_whose_label_is_unknown():
    assert normalise_lead_name("channel 4", "5.6.3-9-62") == "aVR" and normalise_lead_name("x", "5.6.3-9-8") == "V6"
    assert normalise_lead_name("x", "9.9.9") is None


def test_dicom_ecg_with_vendor_lead_labels_is_read(tmp_path, ecg_500hz):
    order = [3, 0, 11, 5, 1, 2, 4, 6, 7, 8, 9, 10]
    path = write_ecg_dicom(ecg_500hz[order], tmp_path / "vendor.dcm", 500, leads=tuple(LEADS[i] for i in order),
                           labels=tuple(VENDOR[i] for i in order))
    np.testing.assert_allclose(load_ecg(path, 500, 5000), ecg_500hz, atol=1e-3)


def test_pydicoms_real_12_lead_ecg():
    """The 12-lead DICOM ECG pydicom ships (a real recording: 1000 Hz, 10 s, leads labelled "Lead I (Einthoven)" …, a
    rhythm group and a median-beat group)."""
    import pydicom
    from pydicom.data import get_testdata_file

    path = get_testdata_file("waveform_ecg.dcm")
    signal = load_ecg(path, sampling_rate=100, num_samples=1000)
    assert signal.shape == (12, 1000) and signal.dtype == np.float32 and np.isfinite(signal).all()
    assert 0.3 < np.abs(signal).max() < 5.0  # millivolts
    # Einthoven: II = I + III; Goldberger: aVR = -(I + II) / 2 (holds sample by sample on a real recording)
    i, ii, iii, avr = (signal[LEADS.index(name)] for name in ("I", "II", "III", "aVR"))
    assert np.abs(ii - (i + iii)).max() < 0.05 and np.abs(avr + (i + ii) / 2).max() < 0.05
    raw = pydicom.dcmread(path).waveform_array(0)[:, 1] / 1000.0  # lead II of the rhythm group, mV at 1000 Hz
    assert np.corrcoef(signal[1], raw[::10])[0, 1] > 0.95


@pytest.mark.parametrize("rate", [0.37, 0.0, 10.0, 1e6])
def test_an_implausible_sampling_rate_is_refused(tmp_path, ecg_500hz, rate):
    path = write_ecg_dicom(ecg_500hz, tmp_path / "ecg.dcm", rate)
    with pytest.raises(InputFileError, match=r"implausible sampling rate .* fix the sampling frequency"):
        load_ecg(path)


def test_a_wfdb_header_with_an_implausible_rate_is_refused(tmp_path, ecg_500hz):
    base = write_ecg_wfdb(ecg_500hz, tmp_path / "rec", 500)
    header = base.with_suffix(".hea")
    header.write_text(header.read_text().replace(" 500 ", " 0.37 ", 1))
    with pytest.raises(InputFileError, match="implausible sampling rate 0.37 Hz"):
        load_ecg(base)


def _with_gaps(signal: np.ndarray, fraction: float, value: float = np.nan) -> np.ndarray:
    out = signal.astype(np.float64).copy()
    mask = np.random.default_rng(0).random(out.shape) < fraction
    out[mask] = value
    return out


def test_non_finite_ecg_samples(tmp_path, ecg_500hz):
    base = write_ecg_wfdb(np.full_like(ecg_500hz, np.nan), tmp_path / "nan", 500)
    with pytest.raises(InputFileError, match=r"lead\(s\) \['I', 'II'.*hold no finite sample"):
        load_ecg(base)
    one_lead = ecg_500hz.astype(np.float64).copy()
    one_lead[4] = np.nan
    with pytest.raises(InputFileError, match=r"\['aVL'\] hold no finite sample"):
        load_ecg(write_ecg_wfdb(one_lead, tmp_path / "lead", 500))
    with pytest.raises(InputFileError, match="40% of the samples are NaN"):
        load_ecg(write_ecg_wfdb(_with_gaps(ecg_500hz, 0.4), tmp_path / "gappy", 500))
    few = load_ecg(write_ecg_wfdb(_with_gaps(ecg_500hz, 0.02), tmp_path / "few", 500), 500, 5000)
    assert np.isfinite(few).all()  # a few dropped samples are zero-filled


def test_implausible_amplitudes_and_short_recordings(tmp_path, ecg_500hz):
    import wfdb

    # microvolts written under a millivolt unit: 1000 times too large
    wfdb.wrsamp("uv", fs=500, units=["mV"] * 12, sig_name=list(LEADS), p_signal=ecg_500hz.T.astype(np.float64) * 1000,
                fmt=["32"] * 12, adc_gain=[1.0] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    with pytest.raises(InputFileError, match=r"beyond the ±50 mV of any ECG; check the channel units"):
        load_ecg(tmp_path / "uv")
    wfdb.wrsamp("volts", fs=500, units=["V"] * 12, sig_name=list(LEADS), p_signal=ecg_500hz.T.astype(np.float64) / 1000,
                fmt=["32"] * 12, adc_gain=[1e6] * 12, baseline=[0] * 12, write_dir=str(tmp_path))
    np.testing.assert_allclose(load_ecg(tmp_path / "volts", 500, 5000), ecg_500hz, atol=2e-3)  # volts → mV
    with pytest.raises(InputFileError, match=r"lasts 0.40 s, less than the 1 s"):
        load_ecg(write_ecg_wfdb(ecg_500hz[:, :200], tmp_path / "short", 500))


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
