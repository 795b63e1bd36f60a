"""The medical vertical's data sets, registered with :mod:`recipes.runtime.datasets` on import.

- ``iu-reports``: the 3,955 Indiana University chest X-ray reports (XML, CC BY-NC-ND 4.0), extracted from the
  ``torchxrayvision==1.5.7`` wheel (``torchxrayvision/data/NLMCXR_reports.tgz``) with ``pip download`` — the
  package is never installed or imported — into ``data_home()/iu-reports/`` as ``ecgen-radiology/*.xml`` and a
  parsed ``reports.parquet``.
- ``more-cohort``: one patient per report with a non-empty FINDINGS/IMPRESSION text: the real text, labels read
  from it (:mod:`recipes.medical_more.labels`), a fixed train/val/test split, and (generated on first use for a
  given image size, ECG rate and label noise, then cached as ``.npy``) a synthesised radiograph and 12-lead ECG
  that follow the labels (:func:`recipes.medical_more.cohort.cohort_arrays`).

See ``data_cards/iu-reports.md`` and ``data_cards/more-cohort.md``. The model's inputs (report embeddings, the
DataModule) are in :mod:`recipes.medical_more.data`.
"""
from __future__ import annotations

import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import polars as pl

from recipes.medical_more.cohort import cohort_arrays
from recipes.medical_more.labels import ATTRIBUTES, FINDINGS, extract_attributes, extract_labels
from recipes.medical_more.readers import read_iu_folder
from recipes.runtime.datasets import (
    DatasetFetchError,
    DatasetSpec,
    fetch_dataset,
    pip_extract,
    progress,
    register_dataset,
    replace_dir,
)

__all__ = ["IU_PACKAGE", "IU_VERSION", "DATASETS", "fetch_iu_reports", "fetch_more_cohort", "build_cohort",
           "write_cohort", "load_cohort"]

IU_PACKAGE, IU_VERSION = "torchxrayvision", "1.5.7"
IU_MEMBER = "NLMCXR_reports.tgz"


# ------------------------------------------------------------------------------------------ iu-reports
def _install_iu(source: Path, dest: Path) -> Path:
    """Copy the XML files (from a folder or the ``.tgz``) plus ``reports.parquet`` into ``dest`` atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.build-") as scratch:
        staging = Path(scratch) / "staging"
        xml_dir = staging / "ecgen-radiology"
        xml_dir.mkdir(parents=True)
        archives = [source] if source.is_file() else sorted(source.rglob(IU_MEMBER))
        if archives:
            with tarfile.open(archives[0]) as archive:
                for member in archive.getmembers():
                    if member.isfile() and member.name.endswith(".xml") and ".." not in Path(member.name).parts:
                        with archive.extractfile(member) as handle:
                            (xml_dir / Path(member.name).name).write_bytes(handle.read())
        else:
            for file in sorted(source.rglob("*.xml")):
                shutil.copyfile(file, xml_dir / file.name)
        frame = read_iu_folder(xml_dir)
        frame.write_parquet(staging / "reports.parquet")
        progress(f"iu-reports: {frame.height:,} reports")
        return replace_dir(staging, dest)


def fetch_iu_reports(path: Path | None, dest: Path) -> Path:
    """``fusion data fetch iu-reports``: the cache, a local copy (``--path``: a folder of XML or the ``.tgz``),
    or the ``torchxrayvision`` wheel from PyPI."""
    if path is not None:
        if not path.exists():
            raise DatasetFetchError(f"{path} does not exist; pass the ecgen-radiology folder or {IU_MEMBER}")
        return _install_iu(path, dest)
    if (dest / "reports.parquet").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.wheel-") as scratch:
        extracted = pip_extract(IU_PACKAGE, IU_VERSION, "torchxrayvision/data", Path(scratch) / "data")
        archive = extracted / IU_MEMBER
        if not archive.is_file():
            raise DatasetFetchError(f"the {IU_PACKAGE}=={IU_VERSION} wheel has no {IU_MEMBER}; pass a local copy with --path")
        return _install_iu(archive, dest)


# ----------------------------------------------------------------------------------------- more-cohort
def _split_of(patient_id: str, seed: int = 0) -> str:
    bucket = zlib.crc32(f"{seed}:{patient_id}".encode()) % 100
    return "train" if bucket < 70 else "val" if bucket < 85 else "test"


def build_cohort(reports: pl.DataFrame) -> pl.DataFrame:
    """One row per report with text: patient_id, split, text, mesh, the 0/1 label columns of :data:`FINDINGS` and
    the report details of :data:`ATTRIBUTES`."""
    rows = []
    for record in reports.iter_rows(named=True):
        text = record["text"] or ""
        if not text.strip():
            continue
        labels = extract_labels(text, record["mesh"] or [])
        attributes = extract_attributes(text, record["mesh"] or [])
        rows.append({"patient_id": record["uid"], "split": _split_of(record["uid"]), "text": text,
                     "mesh": record["mesh"] or [], **labels, **attributes})
    schema = {"patient_id": pl.Utf8, "split": pl.Utf8, "text": pl.Utf8, "mesh": pl.List(pl.Utf8),
              **{f: pl.Int8 for f in FINDINGS}, **{a: pl.Int8 for a in ATTRIBUTES}}
    return pl.DataFrame(rows, schema=schema)


def write_cohort(reports: pl.DataFrame, dest: Path) -> pl.DataFrame:
    """:func:`build_cohort` of ``reports`` written to ``dest/cohort.parquet`` (atomically); returns the cohort.
    Only that file is replaced: cached arrays and embeddings of the same reports stay valid."""
    dest.mkdir(parents=True, exist_ok=True)
    cohort = build_cohort(reports)
    with tempfile.NamedTemporaryFile(dir=dest, prefix=".cohort.", suffix=".parquet", delete=False) as handle:
        tmp = Path(handle.name)
    cohort.write_parquet(tmp)
    tmp.replace(dest / "cohort.parquet")
    counts = ", ".join(f"{f} {int(cohort[f].sum())}" for f in FINDINGS)
    progress(f"more-cohort: {cohort.height:,} patients ({counts})")
    return cohort


def fetch_more_cohort(path: Path | None, dest: Path) -> Path:
    """``fusion data fetch more-cohort``: label the IU reports (``--path``: an ``iu-reports`` folder) and generate
    the default synthetic arrays (64×64 radiographs, 100 Hz ECGs)."""
    source = path if path is not None else fetch_dataset("iu-reports")
    reports_file = Path(source) / "reports.parquet"
    reports = pl.read_parquet(reports_file) if reports_file.is_file() else read_iu_folder(Path(source))
    current = (dest / "cohort.parquet").is_file() and set(ATTRIBUTES) <= set(pl.read_parquet_schema(dest / "cohort.parquet"))
    if not current or path is not None:
        write_cohort(reports, dest)
    cohort_arrays(dest, image_size=64, sampling_rate=100)
    return dest


def load_cohort(folder: Path | None = None) -> pl.DataFrame:
    folder = Path(folder) if folder is not None else fetch_dataset("more-cohort")
    return pl.read_parquet(folder / "cohort.parquet")


DATASETS: tuple[DatasetSpec, ...] = tuple(
    register_dataset(spec)
    for spec in (
        DatasetSpec(
            name="iu-reports",
            description="3,955 Indiana University chest X-ray reports (XML, CC BY-NC-ND 4.0) from the torchxrayvision 1.5.7 wheel",
            fetch=fetch_iu_reports,
            card="data_cards/iu-reports.md",
        ),
        DatasetSpec(
            name="more-cohort",
            description="IU reports with extracted labels, each paired with a synthesised radiograph and 12-lead ECG; generated locally",
            fetch=fetch_more_cohort,
            card="data_cards/more-cohort.md",
        ),
    )
)
