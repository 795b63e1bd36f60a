"""Data sets and the Lightning data module of the ``medical_more`` recipe.

- ``iu-reports``: the 3,955 Indiana University chest X-ray reports (XML, CC BY-NC-ND 4.0), extracted from the
  ``torchxrayvision==1.5.7`` wheel (``torchxrayvision/data/NLMCXR_reports.tgz``) with ``pip download`` — the
  package is never installed or imported — into ``data_home()/iu-reports/`` as ``ecgen-radiology/*.xml`` and a
  parsed ``reports.parquet``.
- ``more-cohort``: one patient per report with a non-empty FINDINGS/IMPRESSION text: the real text, labels read
  from it (:mod:`recipes.medical_more.labels`), a fixed train/val/test split, and (generated on first use for a
  given image size, ECG rate and label noise, then cached as ``.npy``) a synthesised radiograph and 12-lead ECG
  that follow the labels (:mod:`recipes.medical_more.cohort`). Report embeddings of the frozen MiniLM encoder are
  cached the same way. See ``data_cards/iu-reports.md`` and ``data_cards/more-cohort.md``.

Batches are dicts: ``xray (B, 1, S, S)``, ``ecg (B, 12, T)``, the report as :func:`report_inputs` gives it
(``report_embedding (B, 384)`` of the frozen MiniLM, or ``report_ids``/``report_mask (B, N)``: hashed words for the
from-scratch encoder, or MiniLM tokenizer ids for the LoRA-tuned MiniLM, ``minilm_lora``),
``present_{xray,ecg,report} (B,)`` bool, ``labels (B, F)`` float in :data:`FINDINGS` order, ``index (B,)`` the
cohort row, ``group_xray``/``group_ecg (B,)`` the row's :func:`group_ids` (patients whose reports describe the same
radiograph / ECG share one).
"""
from __future__ import annotations

import shutil
import tarfile
import tempfile
import uuid
import zlib
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import polars as pl_
import torch
from torch.utils.data import DataLoader, Dataset

from fusion_core.encoders.text import HashTokenizer
from fusion_core.encoders.text_minilm import MINILM_DIM, minilm_encode, minilm_tokenize
from recipes.medical_more.cohort import ECG_DETAILS, ECG_SECONDS, appearance_labels, patient_rng, synthesize_ecg, synthesize_xray
from recipes.medical_more.labels import ATTRIBUTES, DISEASE_FINDINGS, FINDINGS, extract_attributes, extract_labels
from recipes.medical_more.loaders import read_iu_report
from recipes.medical_more.model import REPORT_ENCODERS
from recipes.runtime.datasets import (
    DatasetFetchError,
    DatasetSpec,
    data_home,
    fetch_dataset,
    pip_extract,
    progress,
    register_dataset,
    replace_dir,
)

__all__ = [
    "IU_PACKAGE",
    "IU_VERSION",
    "PROMPTS",
    "fetch_iu_reports",
    "fetch_more_cohort",
    "report_groups",
    "group_ids",
    "read_iu_folder",
    "build_cohort",
    "load_cohort",
    "cohort_arrays",
    "report_embeddings",
    "report_inputs",
    "MoreDataModule",
    "MoreDataset",
]

IU_PACKAGE, IU_VERSION = "torchxrayvision", "1.5.7"
IU_MEMBER = "NLMCXR_reports.tgz"
SPLITS = ("train", "val", "test")
SYNTHESIS_VERSION = 3  # part of the cached arrays' names: bump when the synthesiser changes
# Zero-shot prompts per finding: (present, absent), in the report's own FINDINGS/IMPRESSION form.
PROMPTS: dict[str, tuple[str, str]] = {
    "cardiomegaly": ("FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.",
                     "FINDINGS: The heart size is normal. IMPRESSION: No cardiomegaly."),
    "effusion": ("FINDINGS: There is a pleural effusion. IMPRESSION: Pleural effusion.",
                 "FINDINGS: No pleural effusion. IMPRESSION: No effusion."),
    "opacity": ("FINDINGS: There is an airspace opacity. IMPRESSION: Focal consolidation.",
                "FINDINGS: The lungs are clear without focal consolidation. IMPRESSION: No opacity."),
    "normal": ("FINDINGS: The heart and lungs are normal. IMPRESSION: No acute cardiopulmonary abnormality.",
               "FINDINGS: Cardiomegaly with effusion and opacity. IMPRESSION: Abnormal chest."),
}


# ------------------------------------------------------------------------------------------ iu-reports
def read_iu_folder(folder: Path) -> pl_.DataFrame:
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
    return pl_.DataFrame(rows, schema={"uid": pl_.Utf8, "comparison": pl_.Utf8, "indication": pl_.Utf8,
                                       "findings": pl_.Utf8, "impression": pl_.Utf8, "mesh": pl_.List(pl_.Utf8),
                                       "text": pl_.Utf8}).sort("uid")


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


def build_cohort(reports: pl_.DataFrame) -> pl_.DataFrame:
    """One row per report with text: patient_id, split, text, mesh and the 0/1 label columns of :data:`FINDINGS`."""
    rows = []
    for record in reports.iter_rows(named=True):
        text = record["text"] or ""
        if not text.strip():
            continue
        labels = extract_labels(text, record["mesh"] or [])
        attributes = extract_attributes(text, record["mesh"] or [])
        rows.append({"patient_id": record["uid"], "split": _split_of(record["uid"]), "text": text,
                     "mesh": record["mesh"] or [], **labels, **attributes})
    schema = {"patient_id": pl_.Utf8, "split": pl_.Utf8, "text": pl_.Utf8, "mesh": pl_.List(pl_.Utf8),
              **{f: pl_.Int8 for f in FINDINGS}, **{a: pl_.Int8 for a in ATTRIBUTES}}
    return pl_.DataFrame(rows, schema=schema)


def report_groups(cohort: pl_.DataFrame, modality: str = "xray") -> list[tuple[int, ...]]:
    """Per cohort row, everything the synthesiser reads from its report to draw ``modality`` (``xray``: the disease
    labels and every :data:`ATTRIBUTES` detail; ``ecg``: the disease labels and :data:`ECG_DETAILS`). Rows with
    equal keys get that modality drawn from the same description, so no model can match such reports to their own
    patient better than at random (see ``fusion_core.losses.retrieval_recall_ceiling``)."""
    details = {"xray": ATTRIBUTES, "ecg": ECG_DETAILS}
    if modality not in details:
        raise ValueError(f"modality must be 'xray' or 'ecg'; got {modality!r}")
    columns = [*DISEASE_FINDINGS, *details[modality]]
    return [tuple(int(v or 0) for v in row) for row in cohort.select(columns).iter_rows()]


def group_ids(cohort: pl_.DataFrame, modality: str = "xray") -> np.ndarray:
    """``(P,)`` int64: :func:`report_groups` as integers (first appearance order), the semantic positives of the
    contrastive loss (``MoreModule(semantic_positives=True)``)."""
    ids: dict[tuple[int, ...], int] = {}
    return np.array([ids.setdefault(key, len(ids)) for key in report_groups(cohort, modality)], dtype=np.int64)


def fetch_more_cohort(path: Path | None, dest: Path) -> Path:
    """``fusion data fetch more-cohort``: label the IU reports (``--path``: an ``iu-reports`` folder) and generate
    the default synthetic arrays (64×64 radiographs, 100 Hz ECGs)."""
    source = path if path is not None else fetch_dataset("iu-reports")
    reports_file = Path(source) / "reports.parquet"
    reports = pl_.read_parquet(reports_file) if reports_file.is_file() else read_iu_folder(Path(source))
    current = (dest / "cohort.parquet").is_file() and set(ATTRIBUTES) <= set(pl_.read_parquet_schema(dest / "cohort.parquet"))
    if not current or path is not None:
        # only cohort.parquet is replaced: cached arrays and embeddings of the same reports stay valid
        dest.mkdir(parents=True, exist_ok=True)
        cohort = build_cohort(reports)
        tmp = dest / f".cohort.{uuid.uuid4().hex[:8]}.parquet"
        cohort.write_parquet(tmp)
        tmp.replace(dest / "cohort.parquet")
        counts = ", ".join(f"{f} {int(cohort[f].sum())}" for f in FINDINGS)
        progress(f"more-cohort: {cohort.height:,} patients ({counts})")
    cohort_arrays(dest, image_size=64, sampling_rate=100)
    return dest


def load_cohort(folder: Path | None = None) -> pl_.DataFrame:
    folder = Path(folder) if folder is not None else fetch_dataset("more-cohort")
    return pl_.read_parquet(folder / "cohort.parquet")


def _atomic_save(array: np.ndarray, file: Path) -> None:
    tmp = file.with_name(f".{file.name}.{uuid.uuid4().hex[:8]}.tmp.npy")
    np.save(tmp, array)
    tmp.replace(file)


def cohort_arrays(folder: Path, image_size: int = 64, sampling_rate: int = 100, label_noise: float = 0.1,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """The cohort's synthetic modalities, generated once per setting and cached in ``folder``:
    ``xray (P, S, S)`` float16 in [0, 1], ``ecg (P, 12, 10·rate)`` float16 mV, ``shown (P, 3)`` int8: the labels the
    synthesis followed (cardiomegaly, effusion, opacity; differs from the report labels at rate ``label_noise``)."""
    folder = Path(folder)
    key = f"v{SYNTHESIS_VERSION}-{image_size}px-{sampling_rate}hz-noise{label_noise:g}-seed{seed}"
    files = {name: folder / f"{name}-{key}.npy" for name in ("xray", "ecg", "shown")}
    if all(f.is_file() for f in files.values()):
        return {name: np.load(f, mmap_mode="r") for name, f in files.items()}
    cohort = pl_.read_parquet(folder / "cohort.parquet")
    size = cohort.height
    samples = int(round(ECG_SECONDS * sampling_rate))
    xray = np.zeros((size, image_size, image_size), dtype=np.float16)
    ecg = np.zeros((size, 12, samples), dtype=np.float16)
    shown = np.zeros((size, 3), dtype=np.int8)
    progress(f"more-cohort: synthesising {size:,} radiographs ({image_size}px) and ECGs ({sampling_rate} Hz)")
    for row, record in enumerate(cohort.iter_rows(named=True)):
        rng = patient_rng(record["patient_id"], seed)
        labels = {**{a: record.get(a) or 0 for a in ATTRIBUTES}, **appearance_labels(record, rng, label_noise)}
        shown[row] = [labels["cardiomegaly"], labels["effusion"], labels["opacity"]]
        xray[row] = synthesize_xray(labels, rng, image_size)
        ecg[row] = synthesize_ecg(labels, rng, sampling_rate)
    for name, array in (("xray", xray), ("ecg", ecg), ("shown", shown)):
        _atomic_save(array, files[name])
    return {"xray": xray, "ecg": ecg, "shown": shown}


def report_embeddings(folder: Path, texts: list[str], rows: np.ndarray | None = None) -> np.ndarray:
    """``(P, 384)`` float32 frozen-MiniLM sentence embeddings of the cohort's ``texts``; only ``rows`` (default all)
    are guaranteed filled. Embedded rows are cached (``report-minilm.npy`` + a done mask), so a later call embeds only
    rows it has not seen."""
    folder = Path(folder)
    table_file, done_file = folder / "report-minilm.npy", folder / "report-minilm-done.npy"
    rows = np.arange(len(texts)) if rows is None else np.asarray(rows)
    table = np.zeros((len(texts), MINILM_DIM), dtype=np.float32)
    done = np.zeros(len(texts), dtype=bool)
    if table_file.is_file() and done_file.is_file():
        cached, cached_done = np.load(table_file), np.load(done_file)
        if cached.shape[0] == len(texts):
            table, done = cached, cached_done
    todo = rows[~done[rows]]
    if len(todo):
        progress(f"more-cohort: embedding {len(todo):,} reports with the frozen MiniLM encoder")
        table[todo] = minilm_encode([texts[i] for i in todo]).pooled.numpy()
        done[todo] = True
        _atomic_save(table, table_file)
        _atomic_save(done, done_file)
    return table


def report_inputs(texts: list[str], report_encoder: str, max_len: int, vocab_size: int) -> dict[str, torch.Tensor]:
    """The report branch's inputs for ``texts``: ``report_embedding (B, 384)`` frozen-MiniLM sentence embeddings
    (``"minilm"``; of the first 128 word pieces, as the cached cohort embeddings), or ``report_ids``/``report_mask
    (B, max_len)`` — MiniLM word pieces (``"minilm_lora"``) or hashed words behind a class token (``"scratch"``,
    ``vocab_size`` ids)."""
    if report_encoder not in REPORT_ENCODERS:
        raise ValueError(f"report_encoder must be one of {REPORT_ENCODERS}; got {report_encoder!r}")
    if report_encoder == "minilm":
        return {"report_embedding": minilm_encode(texts).pooled}
    if report_encoder == "minilm_lora":
        ids, mask = minilm_tokenize(texts, max_len)
    else:
        ids, mask = HashTokenizer(vocab_size, max_len)(texts)
    return {"report_ids": ids, "report_mask": mask}


register_dataset(DatasetSpec(
    name="iu-reports",
    description="3,955 Indiana University chest X-ray reports (XML, CC BY-NC-ND 4.0) from the torchxrayvision 1.5.7 wheel",
    fetch=fetch_iu_reports,
    card="data_cards/iu-reports.md",
))
register_dataset(DatasetSpec(
    name="more-cohort",
    description="IU reports with extracted labels, each paired with a synthesised radiograph and 12-lead ECG; generated locally",
    fetch=fetch_more_cohort,
    card="data_cards/more-cohort.md",
))


# --------------------------------------------------------------------------------------------- module
class MoreDataset(Dataset):
    """Rows of the cohort held in memory as tensors; ``__getitem__`` gives one sample of the batch dict."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors
        self.size = next(iter(tensors.values())).shape[0]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}


class MoreDataModule(pl.LightningDataModule):
    """The MoRE cohort for training: the fixed train/val/test split of ``more-cohort``.

    Args:
        image_size: radiograph side (pixels); ``sampling_rate``: ECG rate (Hz, 10 s recordings).
        report_encoder: ``minilm`` (frozen all-MiniLM-L6-v2, embeddings cached), ``minilm_lora`` (MiniLM token ids,
            at most ``text_max_len`` tokens, for the MiniLM tuned with LoRA adapters in the training loop) or
            ``scratch`` (hashed words for the from-scratch transformer; ``vocab_size``, ``text_max_len``).
        max_patients: keep at most this many patients (a deterministic subset, split proportions kept); None = all.
        label_noise: chance a finding's synthesised appearance follows the flipped label.
        missing: ``{modality: rate}`` of patients whose modality is absent (at random), to train and test with gaps.
        data_dir: a ``more-cohort`` folder (default: fetched into the data cache).
    """

    def __init__(
        self,
        image_size: int = 64,
        sampling_rate: int = 100,
        report_encoder: str = "minilm",
        vocab_size: int = 4096,
        text_max_len: int = 64,
        max_patients: int | None = None,
        label_noise: float = 0.1,
        missing: dict[str, float] | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        data_dir: str | None = None,
    ) -> None:
        super().__init__()
        if report_encoder not in REPORT_ENCODERS:
            raise ValueError(f"report_encoder must be one of {REPORT_ENCODERS}; got {report_encoder!r}")
        if image_size < 16 or sampling_rate < 50:
            raise ValueError(f"need image_size >= 16 and sampling_rate >= 50; got {image_size}, {sampling_rate}")
        if max_patients is not None and max_patients < 10:
            raise ValueError(f"max_patients must be >= 10 (or null for all); got {max_patients}")
        missing = dict(missing or {})
        for name, rate in missing.items():
            if name not in ("xray", "ecg", "report") or not 0.0 <= rate < 1.0:
                raise ValueError(f"missing must map xray/ecg/report to a rate in [0, 1); got {missing}")
        self.save_hyperparameters()
        self.image_size, self.sampling_rate = image_size, sampling_rate
        self.ecg_samples = int(round(ECG_SECONDS * sampling_rate))
        self.report_encoder, self.vocab_size, self.text_max_len = report_encoder, vocab_size, text_max_len
        self.max_patients, self.label_noise, self.missing = max_patients, label_noise, missing
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.data_dir = data_dir
        self.findings = FINDINGS
        self.cohort: pl_.DataFrame | None = None
        self.splits: dict[str, MoreDataset] = {}

    @property
    def folder(self) -> Path:
        return Path(self.data_dir) if self.data_dir else data_home() / "more-cohort"

    def prepare_data(self) -> None:
        if self.data_dir is None:
            fetch_dataset("more-cohort")
        cohort_arrays(self.folder, self.image_size, self.sampling_rate, self.label_noise, self.seed)
        if self.report_encoder == "minilm":
            texts = pl_.read_parquet(self.folder / "cohort.parquet")["text"].to_list()
            report_embeddings(self.folder, texts, self.selected_rows())

    def selected_rows(self) -> np.ndarray:
        """Cohort row numbers used (all, or a deterministic ``max_patients`` subset)."""
        cohort = pl_.read_parquet(self.folder / "cohort.parquet", columns=["patient_id"])
        rows = np.arange(cohort.height)
        if self.max_patients is not None and self.max_patients < cohort.height:
            order = np.random.default_rng(self.seed).permutation(cohort.height)
            rows = np.sort(order[: self.max_patients])
        return rows

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if not (self.folder / "cohort.parquet").is_file():
            self.prepare_data()
        cohort = pl_.read_parquet(self.folder / "cohort.parquet")
        arrays = cohort_arrays(self.folder, self.image_size, self.sampling_rate, self.label_noise, self.seed)
        rows = self.selected_rows()
        self.cohort = cohort.with_row_index("index")[rows]
        rng = np.random.default_rng(self.seed + 1)
        present = {m: torch.from_numpy(rng.random(len(rows)) >= self.missing.get(m, 0.0)) for m in ("xray", "ecg", "report")}
        tensors: dict[str, torch.Tensor] = {
            "xray": torch.from_numpy(np.asarray(arrays["xray"][rows], dtype=np.float32)).unsqueeze(1),
            "ecg": torch.from_numpy(np.asarray(arrays["ecg"][rows], dtype=np.float32)),
            "labels": torch.from_numpy(self.cohort.select(FINDINGS).to_numpy().astype(np.float32)),
            "index": torch.from_numpy(rows.astype(np.int64)),
            "group_xray": torch.from_numpy(group_ids(cohort, "xray")[rows]),
            "group_ecg": torch.from_numpy(group_ids(cohort, "ecg")[rows]),
            **{f"present_{m}": mask for m, mask in present.items()},
        }
        if self.report_encoder == "minilm":  # the cohort's embeddings are cached by report_embeddings
            table = report_embeddings(self.folder, cohort["text"].to_list(), rows)
            tensors["report_embedding"] = torch.from_numpy(table[rows].astype(np.float32))
        else:
            tensors.update(report_inputs(self.cohort["text"].to_list(), self.report_encoder, self.text_max_len,
                                         self.vocab_size))
        split = self.cohort["split"].to_numpy()
        for name in SPLITS:
            keep = torch.from_numpy(np.flatnonzero(split == name))
            self.splits[name] = MoreDataset({k: v[keep] for k, v in tensors.items()})

    def prompt_inputs(self) -> dict[str, torch.Tensor]:
        """Report inputs of the zero-shot prompts: rows ``2f`` (present) and ``2f+1`` (absent) for finding ``f``."""
        texts = [text for finding in FINDINGS for text in PROMPTS[finding]]
        if self.report_encoder == "minilm":
            file = self.folder / "prompts-minilm.npy"
            if not file.is_file():
                _atomic_save(minilm_encode(texts).pooled.numpy(), file)
            return {"report_embedding": torch.from_numpy(np.load(file).astype(np.float32))}
        return report_inputs(texts, self.report_encoder, self.text_max_len, self.vocab_size)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          drop_last=shuffle and len(self.splits[split]) > self.batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
