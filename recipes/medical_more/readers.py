"""Real-format readers (and writers for fixtures and demo files) for the three MoRE modalities.

- X-ray: DICOM through ``pydicom`` (modality rescale; MONOCHROME1 inverted so dense tissue is always bright),
  PNG/JPG through MONAI's ``LoadImage``; then the intensities are scaled by their own percentiles
  (:func:`normalise_intensity`, as MONAI's ``ScaleIntensityRangePercentiles``), so neither the file's VOI window nor
  its bit depth or exposure changes what the model sees, and the image is resized keeping its aspect ratio and
  padded to the model's square with the background value (MONAI ``Resize(size_mode="longest")`` + ``SpatialPad``).
  The training cohort goes through the same :func:`normalise_intensity`.
- ECG: WFDB records in the PTB-XL layout (``records100/…/00001_lr`` with ``.hea``/``.dat``) through ``wfdb``,
  and DICOM 12-lead waveforms through ``pydicom`` (the rhythm group); leads are recognised by
  :func:`normalise_lead_name` in the standard, WFDB/PTB-XL and vendor spellings (``"Lead I (Einthoven)"``, ``"AVR"``,
  ``"MDC_ECG_LEAD_V1"``, SCP-ECG codes), put in the standard order (I, II, III, aVR, aVL, aVF, V1–V6), converted to
  mV, checked (a plausible sampling rate, finite and plausible samples), resampled to the model's rate and cropped or
  zero-padded to its length.
- Reports: IU XML (``ecgen-radiology/*.xml``, one report or a whole folder) and MIMIC-CXR-style plain text with
  ``FINDINGS:`` / ``IMPRESSION:`` headings.

Every reader raises :class:`InputFileError` naming the file, what is wrong and how to fix it, and never quotes
the content of a file it could not parse.
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
    "normalise_intensity",
    "INTENSITY_PERCENTILES",
    "ECG_RATE_RANGE",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# the radiograph's own percentiles mapped to [0, 1]: robust to the window, the bit depth and the exposure of a file
INTENSITY_PERCENTILES: tuple[float, float] = (1.0, 99.0)
MAX_XRAY_PIXELS = 12_000 * 12_000  # a larger image is refused before decoding (a decompression bomb)
# sampling rates a 12-lead recording can have (Hz): below, no QRS complex is resolved; above, no ECG device writes
ECG_RATE_RANGE: tuple[float, float] = (50.0, 20_000.0)
MIN_ECG_SECONDS = 1.0
MAX_ECG_MV = 50.0  # a body-surface ECG stays within ±10 mV; beyond ±50 mV the units or the file are wrong
_MV_PER_UNIT = {"uv": 1e-3, "µv": 1e-3, "microvolt": 1e-3, "mv": 1.0, "millivolt": 1.0, "v": 1e3, "volt": 1e3}
MAX_MISSING_FRACTION = 0.2  # more non-finite samples than this and the recording is refused, fewer are zero-filled


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


def normalise_intensity(image: np.ndarray) -> np.ndarray:
    """``(..., H, W)`` radiograph(s) → the same shape in ``[0, 1]``: each image's :data:`INTENSITY_PERCENTILES` mapped
    to 0 and 1 and clipped — what MONAI's ``ScaleIntensityRangePercentiles(lower, upper, 0, 1, clip=True)`` does to
    one image, vectorised over a stack (the training cohort). A flat image becomes all zeros."""
    images = np.asarray(image, dtype=np.float64)
    low, high = np.percentile(images, INTENSITY_PERCENTILES, axis=(-2, -1), keepdims=True)
    span = high - low
    scaled = np.where(span > 0, (images - low) / np.where(span > 0, span, 1.0), 0.0)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so the longer side is ``size`` (aspect ratio kept), then pad the shorter one, centred, to ``size`` with
    0 (the background after :func:`normalise_intensity`)."""
    from monai.transforms import Resize, SpatialPad

    shrink = max(image.shape) > size
    resized = Resize(size, size_mode="longest", mode="area" if shrink else "bilinear")(image[None].astype(np.float32))
    padded = SpatialPad((size, size), mode="constant", value=0.0)(resized)
    return np.asarray(padded)[0]


def _dicom_xray(path: Path) -> np.ndarray:
    """The stored pixels with the modality rescale applied, MONOCHROME1 inverted (dense tissue high); the VOI window
    is ignored, since :func:`normalise_intensity` scales by the image's own percentiles."""
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        _check_pixel_count(path, int(getattr(ds, "Rows", 0)) * int(getattr(ds, "Columns", 0)))
        pixels = ds.pixel_array.astype(np.float64)
    except InputFileError:
        raise
    except Exception as error:  # pydicom raises many types for broken files; its messages can quote the file
        raise InputFileError(f"{path}: not a readable DICOM image ({type(error).__name__}); "
                             "export the radiograph as DICOM, PNG or JPG") from None
    if pixels.ndim == 3:  # a multi-frame or colour file: keep the first frame / average the colours
        pixels = pixels.mean(-1) if pixels.shape[-1] in (3, 4) else pixels[0]
    if pixels.ndim != 2 or min(pixels.shape) < 2:
        raise InputFileError(f"{path}: the DICOM holds no 2-D image (pixel array {pixels.shape}); "
                             "export the radiograph itself")
    pixels = pixels * float(getattr(ds, "RescaleSlope", 1.0) or 1.0) + float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        pixels = pixels.max() - pixels  # MONOCHROME1 shows low values bright
    return pixels


def _check_pixel_count(path: Path, pixels: int) -> None:
    if pixels > MAX_XRAY_PIXELS:
        raise InputFileError(f"{path}: the image has {pixels:,} pixels, more than the {MAX_XRAY_PIXELS:,} a radiograph "
                             "needs; downsample it (e.g. to 2048 px on the long side) before scoring")


def _raster_xray(path: Path) -> np.ndarray:
    from monai.transforms import LoadImage
    from PIL import Image

    try:
        with Image.open(path) as handle:
            _check_pixel_count(path, handle.width * handle.height)
        pixels = LoadImage(image_only=True, ensure_channel_first=True, reader="PILReader", reverse_indexing=False)(str(path))
    except InputFileError:
        raise
    except Exception as error:  # PIL / MONAI raise many types for broken files
        raise InputFileError(f"{path}: not a readable PNG/JPG image ({type(error).__name__}); "
                             "re-export it as an 8- or 16-bit greyscale PNG") from None
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim != 3 or min(pixels.shape[1:]) < 2:
        raise InputFileError(f"{path}: the file holds no 2-D image (shape {pixels.shape}); export the radiograph itself")
    return pixels[:3].mean(0)  # (C, H, W) → (H, W); an alpha channel is left out


def load_xray(path: str | Path, size: int = 64) -> np.ndarray:
    """A radiograph as a ``(size, size)`` float32 array in ``[0, 1]``, dense tissue bright: intensities scaled by the
    image's own percentiles (:func:`normalise_intensity`), the aspect ratio kept and the short side padded."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such X-ray file; give the path of a DICOM, PNG or JPG image")
    if path.stat().st_size == 0:
        raise InputFileError(f"{path}: the X-ray file is empty; export the radiograph again as DICOM, PNG or JPG")
    if _is_dicom(path):
        image = _dicom_xray(path)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        image = _raster_xray(path)
    else:
        raise InputFileError(f"{path}: unknown X-ray format {path.suffix!r}; use DICOM (.dcm), PNG or JPG")
    if not np.isfinite(image).all():
        raise InputFileError(f"{path}: the image holds non-finite pixel values; export it again as an integer image")
    image = normalise_intensity(image)
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
# the 12 leads' names after :func:`_lead_key` (lower case, no spaces, dashes or underscores), in every spelling met
# in exports: standard, WFDB/PTB-XL (AVR), European roman (DI, DII, DIII), IEEE 11073 MDC (MDC_ECG_LEAD_AVR) and
# SCP-ECG / DICOM code values (5.6.3-9-1 …)
_LEAD_ALIASES: dict[str, str] = {
    **{name.lower(): name for name in LEADS},
    "di": "I", "dii": "II", "diii": "III", "c1": "V1", "c2": "V2", "c3": "V3", "c4": "V4", "c5": "V5", "c6": "V6",
}
_SCPECG_CODES: dict[str, str] = {
    "5.6.3-9-1": "I", "5.6.3-9-2": "II", "5.6.3-9-61": "III", "5.6.3-9-62": "aVR", "5.6.3-9-63": "aVL",
    "5.6.3-9-64": "aVF", **{f"5.6.3-9-{k + 2}": f"V{k}" for k in range(1, 7)},
}
# what vendors add to a lead's name: "Lead", "ECG", "MDC_ECG_LEAD_", and a parenthesised note ("(Einthoven)")
_LEAD_NOISE = re.compile(r"\(.*?\)|\[.*?\]|^\s*(?:mdc[_ ]+)?(?:ecg[_ ]*)?(?:lead[_ ]*)?|\s+(?:lead|chest|limb)\s*$")


def _lead_key(name: str) -> str:
    return re.sub(r"[\s_\-:.]+", "", _LEAD_NOISE.sub("", str(name).strip().lower()))


def normalise_lead_name(name: str, code: str | None = None) -> str | None:
    """The standard name (:data:`LEADS`) of a lead as an export spells it — ``"Lead I (Einthoven)"``, ``"Lead aVR
    (Goldberger)"``, ``"Lead V1 (Chest)"``, ``"AVR"`` (WFDB/PTB-XL), ``"MDC_ECG_LEAD_V1"``, ``"DII"`` — or by its
    SCP-ECG ``code`` (``"5.6.3-9-62"`` is aVR) when the name is not recognised; None when it is none of the 12."""
    lead = _LEAD_ALIASES.get(_lead_key(name))
    if lead is None and code is not None:
        lead = _SCPECG_CODES.get(str(code).strip())
    return lead


def _standard_order(signal: np.ndarray, names: list[str], path: Path, codes: list[str | None] | None = None) -> np.ndarray:
    """``(T, C)`` with ``names`` → ``(12, T)`` in :data:`LEADS` order."""
    index = {}
    codes = codes or [None] * len(names)
    for column, (name, code) in enumerate(zip(names, codes)):
        lead = normalise_lead_name(name, code)
        if lead is not None and lead not in index:
            index[lead] = column
    missing = [lead for lead in LEADS if lead not in index]
    if missing:
        raise InputFileError(f"{path}: the recording lacks lead(s) {missing} (its channels are named {names}); "
                             "export all 12 standard leads (I, II, III, aVR, aVL, aVF, V1-V6), or rename the channels "
                             "to these names")
    return np.stack([signal[:, index[lead]] for lead in LEADS]).astype(np.float64)


def _check_rate(rate: float, path: Path) -> float:
    low, high = ECG_RATE_RANGE
    if not np.isfinite(rate) or not low <= rate <= high:
        raise InputFileError(f"{path}: implausible sampling rate {rate:g} Hz (an ECG is sampled at {low:g}-{high:g} Hz, "
                             "usually 100-1000); fix the sampling frequency in the file's header")
    return float(rate)


def _check_samples(signal: np.ndarray, rate: float, path: Path) -> np.ndarray:
    """``(12, T)`` mV with at most :data:`MAX_MISSING_FRACTION` non-finite samples (zero-filled), no lead without a
    finite sample, every value within ±:data:`MAX_ECG_MV` and at least :data:`MIN_ECG_SECONDS` of recording."""
    if signal.shape[1] < MIN_ECG_SECONDS * rate:
        raise InputFileError(f"{path}: the recording lasts {signal.shape[1] / rate:.2f} s, less than the "
                             f"{MIN_ECG_SECONDS:g} s needed; export the full 10 s 12-lead recording")
    finite = np.isfinite(signal)
    empty = [lead for lead, ok in zip(LEADS, finite.any(axis=1)) if not ok]
    if empty:
        raise InputFileError(f"{path}: lead(s) {empty} hold no finite sample (NaN or infinite only); export the "
                             "recording again with every lead recorded")
    missing = 1.0 - finite.mean()
    if missing > MAX_MISSING_FRACTION:
        raise InputFileError(f"{path}: {missing:.0%} of the samples are NaN or infinite (at most "
                             f"{MAX_MISSING_FRACTION:.0%} can be filled); export the recording again")
    if np.isinf(signal).any():
        raise InputFileError(f"{path}: the recording holds infinite samples; export it again")
    signal = np.where(finite, signal, 0.0)
    peak = float(np.abs(signal).max())
    if peak > MAX_ECG_MV:
        raise InputFileError(f"{path}: samples reach {peak:.3g} mV, beyond the ±{MAX_ECG_MV:g} mV of any ECG; check the "
                             "channel units and sensitivity in the file (µV stored as mV?)")
    return signal


def _fit_length(signal: np.ndarray, rate: float, target_rate: int, num_samples: int) -> np.ndarray:
    from fractions import Fraction

    from scipy.signal import resample_poly

    if abs(rate - target_rate) > 1e-6:
        ratio = Fraction(target_rate / rate).limit_denominator(1000)
        # only the samples that reach the model's window are resampled (a long recording costs no more)
        needed = int(np.ceil((num_samples + 16) * ratio.denominator / ratio.numerator))
        signal = resample_poly(signal[:, :needed], ratio.numerator, ratio.denominator, axis=1)
    out = np.zeros((signal.shape[0], num_samples), dtype=np.float32)
    length = min(num_samples, signal.shape[1])
    out[:, :length] = signal[:, :length]
    return out


def _wfdb_ecg(path: Path, seconds: float) -> tuple[np.ndarray, list[str], float]:
    """``(signal (T, C) mV, channel names, rate)`` of the first ``seconds`` of a WFDB record; every file the header
    names must lie next to it (and inside the data root)."""
    import wfdb

    from recipes.runtime.inputs import resolve_input_path

    base = path.with_suffix("") if path.suffix in (".hea", ".dat") else path
    header_file = base.with_suffix(".hea")
    resolve_input_path(str(header_file), "ecg_path")  # a header symlinked out of the data root is refused
    if not header_file.is_file():
        raise InputFileError(f"{path}: no WFDB header {header_file.name}; give the record base path "
                             "(e.g. records100/00000/00001_lr) with its .hea and .dat files next to it")
    try:
        header = wfdb.rdheader(str(base))
    except Exception as error:  # wfdb raises many types for broken headers; its messages can quote the file
        raise InputFileError(f"{path}: not a readable WFDB header ({type(error).__name__}); "
                             "check the .hea file against the WFDB header format") from None
    rate = _check_rate(float(header.fs or 0.0), path)
    for name in dict.fromkeys(header.file_name or []):
        signal_file = base.parent / str(name)
        if Path(str(name)).name != str(name) or not signal_file.is_file():
            raise InputFileError(f"{path}: the header names signal file {Path(str(name)).name!r}, which is not next to "
                                 "it; keep the .dat file beside the .hea file under the same name")
        resolve_input_path(str(signal_file), "ecg_path")
    length = int(header.sig_len or 0)
    try:
        record = wfdb.rdrecord(str(base), sampto=min(length, int(np.ceil(seconds * rate)) + 16) or "end")
    except Exception as error:  # wfdb raises many types for broken records
        raise InputFileError(f"{path}: not a readable WFDB record ({type(error).__name__}); "
                             "check that the .dat file matches the .hea header (format, channels, length)") from None
    signal = record.p_signal
    if signal is None or signal.ndim != 2:
        raise InputFileError(f"{path}: the WFDB record holds no signal; export the 12-lead recording again")
    units = [str(u).strip().lower() for u in (record.units or [])]
    scale = np.array([_MV_PER_UNIT.get(u, 1.0) for u in units] or [1.0])
    return signal * scale[None, :], list(record.sig_name), rate


def _rhythm_group(ds) -> int:
    """The waveform group holding the recording: the one labelled RHYTHM, else the longest (not a median beat)."""
    groups = list(ds.WaveformSequence)
    for number, group in enumerate(groups):
        if str(group.get("MultiplexGroupLabel", "")).strip().upper() == "RHYTHM":
            return number
    return max(range(len(groups)), key=lambda n: int(groups[n].get("NumberOfWaveformSamples", 0) or 0))


def _dicom_ecg(path: Path) -> tuple[np.ndarray, list[str], float, list[str | None]]:
    import pydicom

    try:
        ds = pydicom.dcmread(path)
        number = _rhythm_group(ds)
        group = ds.WaveformSequence[number]
        rate = float(group.SamplingFrequency)
    except Exception as error:  # pydicom raises many types for broken files; its messages can quote the file
        raise InputFileError(f"{path}: not a readable DICOM ECG waveform ({type(error).__name__}); "
                             "export a 12-lead ECG waveform object or a WFDB record") from None
    rate = _check_rate(rate, path)
    try:
        signal = ds.waveform_array(number).astype(np.float64)  # (T, C), sensitivity applied: channel units
        names, codes, scale = [], [], []
        for channel in group.ChannelDefinitionSequence:
            source = channel.ChannelSourceSequence[0]
            names.append(str(source.get("CodeMeaning", "")))
            codes.append(str(source.get("CodeValue", "")) or None)
            unit = str(channel.ChannelSensitivityUnitsSequence[0].CodeValue).lower() if "ChannelSensitivityUnitsSequence" in channel else "uv"
            scale.append(_MV_PER_UNIT.get(unit.strip(), 1.0))
    except Exception as error:  # a truncated or inconsistent waveform
        raise InputFileError(f"{path}: the DICOM ECG waveform is truncated or inconsistent ({type(error).__name__}); "
                             "export the 12-lead recording again") from None
    if signal.ndim != 2 or signal.shape[1] != len(scale):
        raise InputFileError(f"{path}: the DICOM ECG waveform has {len(scale)} channel definitions for data shaped "
                             f"{signal.shape}; export the 12-lead recording again")
    return signal * np.array(scale)[None, :], names, rate, codes


def load_ecg(path: str | Path, sampling_rate: int = 100, num_samples: int = 1000) -> np.ndarray:
    """A 12-lead ECG as ``(12, num_samples)`` float32 mV at ``sampling_rate`` Hz, leads in standard order; the
    recording is checked first (sampling rate, length, finite and plausible samples: :class:`InputFileError`)."""
    path = Path(path)
    codes = None
    seconds = num_samples / sampling_rate
    if path.suffix.lower() in (".dcm", ".dicom") or (path.is_file() and _is_dicom(path)):
        if not path.is_file():
            raise InputFileError(f"{path}: no such ECG file; give a DICOM waveform file or a WFDB record base path")
        if path.stat().st_size == 0:
            raise InputFileError(f"{path}: the ECG file is empty; export the 12-lead recording again")
        signal, names, rate, codes = _dicom_ecg(path)
    else:
        signal, names, rate = _wfdb_ecg(path, seconds)
    ordered = _check_samples(_standard_order(signal, names, path, codes), rate, path)
    return _fit_length(ordered, rate, sampling_rate, num_samples)


def write_ecg_wfdb(signal: np.ndarray, base: str | Path, sampling_rate: int, leads: tuple[str, ...] = LEADS) -> Path:
    """Write ``(C, T)`` mV as a WFDB record (16-bit, PTB-XL style) at ``base`` (``.hea`` + ``.dat``)."""
    import wfdb

    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(base.name, fs=sampling_rate, units=["mV"] * len(leads), sig_name=list(leads),
                p_signal=np.asarray(signal, dtype=np.float64).T, fmt=["16"] * len(leads), adc_gain=[1000.0] * len(leads),
                baseline=[0] * len(leads), write_dir=str(base.parent))
    return base


def write_ecg_dicom(signal: np.ndarray, path: str | Path, sampling_rate: float, leads: tuple[str, ...] = LEADS,
                    labels: tuple[str, ...] | None = None) -> Path:
    """Write ``(C, T)`` mV as a DICOM 12-lead ECG waveform (16-bit signed samples in µV); channel ``c`` is named
    ``labels[c]`` (default ``"Lead <lead>"``) with the SCP-ECG code of ``leads[c]``."""
    labels = tuple(labels) if labels is not None else tuple(f"Lead {lead}" for lead in leads)
    codes = {lead: code for code, lead in _SCPECG_CODES.items()}
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
    for lead, label in zip(leads, labels):
        channel, source, units = Dataset(), Dataset(), Dataset()
        source.CodeValue, source.CodingSchemeDesignator, source.CodeMeaning = codes.get(lead, "5.6.3-9-0"), "SCPECG", label
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
