"""Real-format readers (and writers for fixtures and demo files) for the three MoRE modalities.

- X-ray: DICOM through ``pydicom`` (modality rescale, VOI window or the stored bit range, MONOCHROME1 inverted
  so dense tissue is always bright), PNG/JPG through MONAI's ``LoadImage``; all resized with MONAI's ``Resize``
  to the model's square size and scaled to ``[0, 1]``.
- ECG: WFDB records in the PTB-XL layout (``records100/…/00001_lr`` with ``.hea``/``.dat``) through ``wfdb``,
  and DICOM 12-lead waveforms through ``pydicom``; leads are put in the standard order
  (I, II, III, aVR, aVL, aVF, V1–V6), converted to mV, resampled to the model's rate and cropped or zero-padded
  to its length.
- Reports: IU XML (``ecgen-radiology/*.xml``, one report or a whole folder) and MIMIC-CXR-style plain text with
  ``FINDINGS:`` / ``IMPRESSION:`` headings.

Every reader raises :class:`InputFileError` naming the file, what is wrong and how to fix it.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from recipes.medical_more.cohort import LEADS
from recipes.runtime.datasets import DatasetFetchError

__all__ = [
    "InputFileError",
    "IUReport",
    "load_xray",
    "load_ecg",
    "read_iu_report",
    "read_iu_folder",
    "parse_report_text",
    "report_text",
    "write_xray_png",
    "write_xray_dicom",
    "write_ecg_wfdb",
    "write_ecg_dicom",
    "normalise_lead_name",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_LEAD_ALIASES = {name.lower(): name for name in LEADS}


class InputFileError(ValueError):
    """A modality file could not be read; the message names the file and the fix."""


# ---------------------------------------------------------------------------------------------- X-ray
def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    from monai.transforms import Resize

    resized = Resize((size, size), mode="area" if min(image.shape) > size else "bilinear")(image[None].astype(np.float32))
    return np.asarray(resized)[0]


def _dicom_xray(path: Path) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float64)
    except Exception as error:  # pydicom raises many types for broken files
        raise InputFileError(f"{path}: not a readable DICOM image ({type(error).__name__}: {error}); "
                             "export the radiograph as DICOM, PNG or JPG") from None
    if pixels.ndim == 3:  # a multi-frame or colour file: keep the first frame / average the colours
        pixels = pixels.mean(-1) if pixels.shape[-1] in (3, 4) else pixels[0]
    pixels = pixels * float(getattr(ds, "RescaleSlope", 1.0)) + float(getattr(ds, "RescaleIntercept", 0.0))
    centre, width = getattr(ds, "WindowCenter", None), getattr(ds, "WindowWidth", None)
    if centre is not None and width is not None:
        centre = float(centre[0] if isinstance(centre, pydicom.multival.MultiValue) else centre)
        width = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        low, high = centre - width / 2.0, centre + width / 2.0
    else:
        # no VOI window: the stored bit range, so exposure differences between files survive
        bits = int(getattr(ds, "BitsStored", 16))
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        low, high = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if signed else (0.0, 2.0**bits - 1)
    image = np.clip((pixels - low) / max(high - low, 1e-6), 0.0, 1.0)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        image = 1.0 - image  # MONOCHROME1 shows low values bright
    return image


def _raster_xray(path: Path) -> np.ndarray:
    from monai.transforms import LoadImage
    from PIL import Image

    try:
        with Image.open(path) as handle:
            mode = handle.mode
        pixels = LoadImage(image_only=True, ensure_channel_first=True, reader="PILReader", reverse_indexing=False)(str(path))
    except Exception as error:  # PIL / MONAI raise many types for broken files
        raise InputFileError(f"{path}: not a readable PNG/JPG image ({type(error).__name__}: {error}); "
                             "re-export it as an 8- or 16-bit greyscale PNG") from None
    pixels = np.asarray(pixels, dtype=np.float64).mean(0)  # (C, H, W) → (H, W)
    peak = 65535.0 if mode.startswith("I") else 255.0
    return np.clip(pixels / peak, 0.0, 1.0)


def load_xray(path: str | Path, size: int = 64) -> np.ndarray:
    """A radiograph as a ``(size, size)`` float32 array in ``[0, 1]``, dense tissue bright."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such X-ray file; give the path of a DICOM, PNG or JPG image")
    if _is_dicom(path):
        image = _dicom_xray(path)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        image = _raster_xray(path)
    else:
        raise InputFileError(f"{path}: unknown X-ray format {path.suffix!r}; use DICOM (.dcm), PNG or JPG")
    return np.clip(_resize(image, size), 0.0, 1.0).astype(np.float32)


def write_xray_png(image: np.ndarray, path: str | Path, bits: int = 8) -> Path:
    """Write a ``[0, 1]`` image as an 8- or 16-bit greyscale PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    peak, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
    Image.fromarray(np.round(np.clip(image, 0, 1) * peak).astype(dtype)).save(path)
    return path


def write_xray_dicom(image: np.ndarray, path: str | Path, bits_stored: int = 12, monochrome1: bool = False,
                     window: tuple[float, float] | None = None) -> Path:
    """Write a ``[0, 1]`` image as a DICOM (DX) file with ``bits_stored`` bits; MONOCHROME1 stores it inverted."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    peak = 2**bits_stored - 1
    values = np.clip(image, 0, 1)
    values = 1.0 - values if monochrome1 else values
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "DX", "ANON"
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits_stored, bits_stored - 1, 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.round(values * peak).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------------------------ ECG
def normalise_lead_name(name: str) -> str | None:
    """``"Lead aVR"``, ``"AVR"``, ``"avr"`` → ``"aVR"``; None when it is not one of the 12 standard leads."""
    key = re.sub(r"^(lead|ecg)\s*", "", str(name).strip().lower()).replace(" ", "").replace("-", "")
    return _LEAD_ALIASES.get(key)


def _standard_order(signal: np.ndarray, names: list[str], path: Path) -> np.ndarray:
    """``(T, C)`` with ``names`` → ``(12, T)`` in :data:`LEADS` order."""
    index = {}
    for column, name in enumerate(names):
        lead = normalise_lead_name(name)
        if lead is not None and lead not in index:
            index[lead] = column
    missing = [lead for lead in LEADS if lead not in index]
    if missing:
        raise InputFileError(f"{path}: the recording lacks lead(s) {missing} (it has {names}); "
                             "export all 12 standard leads (I, II, III, aVR, aVL, aVF, V1-V6)")
    return np.stack([signal[:, index[lead]] for lead in LEADS]).astype(np.float64)


def _fit_length(signal: np.ndarray, rate: float, target_rate: int, num_samples: int) -> np.ndarray:
    from scipy.signal import resample_poly

    signal = np.nan_to_num(signal, nan=0.0)
    if abs(rate - target_rate) > 1e-6:
        from fractions import Fraction

        ratio = Fraction(target_rate / rate).limit_denominator(1000)
        signal = resample_poly(signal, ratio.numerator, ratio.denominator, axis=1)
    out = np.zeros((signal.shape[0], num_samples), dtype=np.float32)
    length = min(num_samples, signal.shape[1])
    out[:, :length] = signal[:, :length]
    return out


def _wfdb_ecg(path: Path) -> tuple[np.ndarray, list[str], float]:
    import wfdb

    base = path.with_suffix("") if path.suffix in (".hea", ".dat") else path
    if not base.with_suffix(".hea").is_file():
        raise InputFileError(f"{path}: no WFDB header {base.with_suffix('.hea').name}; give the record base path "
                             "(e.g. records100/00000/00001_lr) with its .hea and .dat files next to it")
    try:
        record = wfdb.rdrecord(str(base))
    except Exception as error:  # wfdb raises many types for broken records
        raise InputFileError(f"{path}: not a readable WFDB record ({type(error).__name__}: {error}); "
                             "check that the .dat file matches the .hea header") from None
    signal = record.p_signal
    units = [str(u).lower() for u in (record.units or [])]
    scale = np.array([1e-3 if u in ("uv", "µv", "microvolt") else 1.0 for u in units] or [1.0])
    return signal * scale[None, :], list(record.sig_name), float(record.fs)


def _dicom_ecg(path: Path) -> tuple[np.ndarray, list[str], float]:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        group = ds.WaveformSequence[0]
        signal = ds.waveform_array(0).astype(np.float64)  # (T, C), sensitivity applied: channel units
    except Exception as error:  # pydicom raises many types for broken files
        raise InputFileError(f"{path}: not a readable DICOM ECG waveform ({type(error).__name__}: {error}); "
                             "export a 12-lead ECG waveform object or a WFDB record") from None
    names, scale = [], []
    for channel in group.ChannelDefinitionSequence:
        names.append(str(channel.ChannelSourceSequence[0].CodeMeaning))
        unit = str(channel.ChannelSensitivityUnitsSequence[0].CodeValue).lower() if "ChannelSensitivityUnitsSequence" in channel else "uv"
        scale.append(1e-3 if unit in ("uv", "µv") else 1.0)
    return signal * np.array(scale)[None, :], names, float(group.SamplingFrequency)


def load_ecg(path: str | Path, sampling_rate: int = 100, num_samples: int = 1000) -> np.ndarray:
    """A 12-lead ECG as ``(12, num_samples)`` float32 mV at ``sampling_rate`` Hz, leads in standard order."""
    path = Path(path)
    if path.suffix.lower() in (".dcm", ".dicom") or (path.is_file() and _is_dicom(path)):
        if not path.is_file():
            raise InputFileError(f"{path}: no such ECG file; give a DICOM waveform file or a WFDB record base path")
        signal, names, rate = _dicom_ecg(path)
    else:
        signal, names, rate = _wfdb_ecg(path)
    return _fit_length(_standard_order(signal, names, path), rate, sampling_rate, num_samples)


def write_ecg_wfdb(signal: np.ndarray, base: str | Path, sampling_rate: int, leads: tuple[str, ...] = LEADS) -> Path:
    """Write ``(C, T)`` mV as a WFDB record (16-bit, PTB-XL style) at ``base`` (``.hea`` + ``.dat``)."""
    import wfdb

    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(base.name, fs=sampling_rate, units=["mV"] * len(leads), sig_name=list(leads),
                p_signal=np.asarray(signal, dtype=np.float64).T, fmt=["16"] * len(leads), adc_gain=[1000.0] * len(leads),
                baseline=[0] * len(leads), write_dir=str(base.parent))
    return base


def write_ecg_dicom(signal: np.ndarray, path: str | Path, sampling_rate: int, leads: tuple[str, ...] = LEADS) -> Path:
    """Write ``(C, T)`` mV as a DICOM 12-lead ECG waveform (16-bit signed samples in µV)."""
    import pydicom
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.TwelveLeadECGWaveformStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality, ds.PatientID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "ECG", "ANON"
    group = Dataset()
    group.WaveformOriginality, group.MultiplexGroupLabel = "ORIGINAL", "RHYTHM"
    group.NumberOfWaveformChannels, group.NumberOfWaveformSamples = len(leads), signal.shape[1]
    group.SamplingFrequency = sampling_rate
    group.WaveformBitsAllocated, group.WaveformSampleInterpretation = 16, "SS"
    channels = []
    for lead in leads:
        channel, source, units = Dataset(), Dataset(), Dataset()
        source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning = f"5.6.3-9-{LEADS.index(lead) + 1}", "SCPECG", f"Lead {lead}"
        units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = "uV", "UCUM", "microvolt"
        channel.ChannelSourceSequence = [source]
        channel.ChannelSensitivity, channel.ChannelSensitivityCorrectionFactor, channel.ChannelBaseline = 1.0, 1.0, 0.0
        channel.ChannelSensitivityUnitsSequence = [units]
        channel.WaveformBitsStored = 16
        channels.append(channel)
    group.ChannelDefinitionSequence = channels
    samples = np.clip(np.round(np.asarray(signal).T * 1000.0), -32768, 32767).astype("<i2")  # (T, C) µV
    group.WaveformData = samples.tobytes()
    ds.WaveformSequence = [group]
    ds.save_as(path, enforce_file_format=True)
    return path


# -------------------------------------------------------------------------------------------- reports
@dataclass
class IUReport:
    """One IU X-ray report: its id, the four sections, the MeSH terms and the image ids."""

    uid: str
    comparison: str = ""
    indication: str = ""
    findings: str = ""
    impression: str = ""
    mesh: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return report_text(self.findings, self.impression)


def report_text(findings: str, impression: str) -> str:
    """The text the model reads: FINDINGS then IMPRESSION (the sections that describe the image)."""
    parts = [f"FINDINGS: {findings.strip()}" if findings and findings.strip() else "",
             f"IMPRESSION: {impression.strip()}" if impression and impression.strip() else ""]
    return " ".join(p for p in parts if p)


def read_iu_report(path: str | Path) -> IUReport:
    """Parse one IU ``ecgen-radiology`` XML report."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise InputFileError(f"{path}: not a readable IU report XML ({error}); pass a file from ecgen-radiology/") from None
    uid_node = root.find("uId")
    uid = uid_node.get("id") if uid_node is not None else path.stem
    sections = {str(n.get("Label", "")).upper(): (n.text or "").strip() for n in root.iter("AbstractText")}
    mesh = [(n.text or "").strip() for n in root.iter("major") if n.text]
    images = [n.get("id") for n in root.iter("parentImage") if n.get("id")]
    return IUReport(uid=str(uid), comparison=sections.get("COMPARISON", ""), indication=sections.get("INDICATION", ""),
                    findings=sections.get("FINDINGS", ""), impression=sections.get("IMPRESSION", ""), mesh=mesh, images=images)


def read_iu_folder(folder: str | Path) -> pl.DataFrame:
    """Every ``*.xml`` report under ``folder`` as a frame: uid, comparison, indication, findings, impression,
    mesh (list), text (FINDINGS + IMPRESSION), sorted by uid."""
    files = sorted(Path(folder).rglob("*.xml"))
    if not files:
        raise DatasetFetchError(f"{folder} holds no IU report XML files; pass the folder with ecgen-radiology/*.xml")
    rows = []
    for file in files:
        report = read_iu_report(file)
        rows.append({"uid": report.uid, "comparison": report.comparison, "indication": report.indication,
                     "findings": report.findings, "impression": report.impression, "mesh": report.mesh,
                     "text": report.text})
    return pl.DataFrame(rows, schema={"uid": pl.Utf8, "comparison": pl.Utf8, "indication": pl.Utf8,
                                      "findings": pl.Utf8, "impression": pl.Utf8, "mesh": pl.List(pl.Utf8),
                                      "text": pl.Utf8}).sort("uid")


_HEADING = re.compile(r"^\s*([A-Z][A-Z /]+):", re.MULTILINE)


def parse_report_text(text: str) -> dict[str, str]:
    """MIMIC-CXR-style free text → ``{"findings": …, "impression": …, …}`` by its ``HEADING:`` lines (lower-cased
    keys); text before the first heading goes to ``"preamble"``. A text with no headings is all ``"findings"``."""
    matches = list(_HEADING.finditer(text or ""))
    if not matches:
        return {"findings": " ".join((text or "").split())}
    sections = {"preamble": " ".join(text[: matches[0].start()].split())}
    for match, following in zip(matches, matches[1:] + [None]):
        end = following.start() if following is not None else len(text)
        sections[match.group(1).strip().lower()] = " ".join(text[match.end():end].split())
    return sections
