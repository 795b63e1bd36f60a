"""The MoRE recipe's DataModule: the ``more-cohort`` data set (:mod:`recipes.medical_more.datasets`) as batches.

Batches are dicts: ``xray (B, 1, S, S)``, ``ecg (B, 12, T)``, the report as :func:`report_inputs` gives it
(``report_embedding (B, 384)`` of the frozen MiniLM, or ``report_ids``/``report_mask (B, N)``: hashed words for the
from-scratch encoder, or MiniLM tokenizer ids for the LoRA-tuned MiniLM, ``minilm_lora``),
``present_{xray,ecg,report} (B,)`` bool, ``labels (B, F)`` float in :data:`FINDINGS` order, ``index (B,)`` the
cohort row, ``group_xray``/``group_ecg (B,)`` the row's :func:`group_ids` (patients whose reports describe the same
radiograph / ECG share one).
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import polars as pl
import torch

from fusion_core.encoders.text import HashTokenizer
from fusion_core.encoders.text_minilm import MINILM_DIM, minilm_encode, minilm_tokenize
from recipes.medical_more.cohort import ECG_DETAILS, ECG_SECONDS, cohort_arrays, template_reports
from recipes.medical_more.config import MODALITIES, REPORT_ENCODERS
from recipes.medical_more.datasets import write_cohort
from recipes.medical_more.labels import ATTRIBUTES, DISEASE_FINDINGS, FINDINGS
from recipes.medical_more.readers import normalise_intensity
from recipes.runtime.datamodule import SPLITS, RecipeDataModule, TensorRows, atomic_save
from recipes.runtime.datasets import data_home, fetch_dataset, progress

__all__ = ["PROMPTS", "PROMPTS_PER_SIDE", "prompt_texts", "finding_ids", "report_groups", "group_ids", "report_embeddings", "report_inputs", "MoreDataModule"]

# Zero-shot prompts: per finding, sentences a radiologist writes when the finding is present and when it is absent,
# in the report's own FINDINGS/IMPRESSION form. Each side's prompts are averaged (their normalised projections, as
# CLIP's prompt ensembles), then the present/absent pair is softmaxed (CheXzero). Every finding has as many prompts
# per side as every other (``PROMPTS_PER_SIDE``).
PROMPTS: dict[str, dict[str, tuple[str, ...]]] = {
    "cardiomegaly": {
        "present": ("FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.",
                    "FINDINGS: The cardiac silhouette is enlarged. IMPRESSION: Cardiomegaly.",
                    "FINDINGS: Heart size is mildly enlarged. IMPRESSION: Mild cardiomegaly.",
                    "FINDINGS: Moderate cardiomegaly. IMPRESSION: Enlarged heart."),
        "absent": ("FINDINGS: The heart size is normal. IMPRESSION: No cardiomegaly.",
                   "FINDINGS: Heart size and mediastinal contours are within normal limits. IMPRESSION: Normal heart size.",
                   "FINDINGS: The cardiomediastinal silhouette is normal. IMPRESSION: No acute cardiopulmonary disease.",
                   "FINDINGS: Normal heart size. IMPRESSION: The heart is not enlarged."),
    },
    "effusion": {
        "present": ("FINDINGS: There is a pleural effusion. IMPRESSION: Pleural effusion.",
                    "FINDINGS: Small left pleural effusion. IMPRESSION: Left effusion.",
                    "FINDINGS: Small right pleural effusion with blunting of the costophrenic angle. IMPRESSION: Right effusion.",
                    "FINDINGS: Bilateral pleural effusions. IMPRESSION: Bilateral effusions."),
        "absent": ("FINDINGS: No pleural effusion. IMPRESSION: No effusion.",
                   "FINDINGS: No pleural effusion or pneumothorax. IMPRESSION: No acute disease.",
                   "FINDINGS: The costophrenic angles are sharp. IMPRESSION: No pleural effusion.",
                   "FINDINGS: There is no effusion. IMPRESSION: Clear lungs."),
    },
    "opacity": {
        "present": ("FINDINGS: There is an airspace opacity. IMPRESSION: Focal consolidation.",
                    "FINDINGS: Patchy right basilar opacity. IMPRESSION: Pneumonia.",
                    "FINDINGS: Left lower lobe consolidation. IMPRESSION: Airspace disease.",
                    "FINDINGS: Bilateral airspace opacities. IMPRESSION: Infiltrates."),
        "absent": ("FINDINGS: The lungs are clear without focal consolidation. IMPRESSION: No opacity.",
                   "FINDINGS: The lungs are clear. IMPRESSION: No acute cardiopulmonary abnormality.",
                   "FINDINGS: No focal airspace disease. IMPRESSION: No pneumonia.",
                   "FINDINGS: No focal consolidation, pneumothorax or effusion. IMPRESSION: Clear lungs."),
    },
    "normal": {
        "present": ("FINDINGS: The heart and lungs are normal. IMPRESSION: No acute cardiopulmonary abnormality.",
                    "FINDINGS: Heart size is normal. The lungs are clear. IMPRESSION: Normal chest.",
                    "FINDINGS: The cardiomediastinal silhouette is normal. No pleural effusion or focal consolidation. "
                    "IMPRESSION: No acute disease.",
                    "FINDINGS: Clear lungs, normal heart. IMPRESSION: Negative chest x-ray."),
        "absent": ("FINDINGS: Cardiomegaly with effusion and opacity. IMPRESSION: Abnormal chest.",
                   "FINDINGS: The heart is enlarged. IMPRESSION: Cardiomegaly.",
                   "FINDINGS: Small pleural effusion. IMPRESSION: Pleural effusion.",
                   "FINDINGS: Patchy airspace opacity. IMPRESSION: Pneumonia."),
    },
}
PROMPTS_PER_SIDE = 4
PROMPT_SIDES: tuple[str, str] = ("present", "absent")


def prompt_texts(findings: tuple[str, ...] = FINDINGS) -> list[str]:
    """The prompts in the order :meth:`MoreDataModule.prompt_inputs` encodes them: for each finding, its present
    prompts then its absent ones (``(F, 2, PROMPTS_PER_SIDE)`` flattened)."""
    return [text for finding in findings for side in PROMPT_SIDES for text in PROMPTS[finding][side]]


def finding_ids(labels: np.ndarray) -> np.ndarray:
    """``(P,)`` int64 keys of the disease-label combination of each row (``labels (P, >=3)``, :data:`DISEASE_FINDINGS`
    first): patients whose reports name the same findings share one (the finding-level soft targets,
    ``MoreConfig.finding_target_weight``)."""
    disease = np.asarray(labels)[:, : len(DISEASE_FINDINGS)].astype(np.int64)
    return (disease << np.arange(disease.shape[1])).sum(axis=1)


def report_groups(cohort: pl.DataFrame, modality: str = "xray") -> list[tuple[int, ...]]:
    """Per cohort row, everything the synthesiser reads from its report to draw ``modality`` (``xray``: the disease
    labels and every :data:`ATTRIBUTES` detail; ``ecg``: the disease labels and :data:`ECG_DETAILS`). Rows with
    equal keys get that modality drawn from the same description, so no model can match such reports to their own
    patient better than at random (see ``fusion_core.losses.retrieval_recall_ceiling``)."""
    details = {"xray": ATTRIBUTES, "ecg": ECG_DETAILS}
    if modality not in details:
        raise ValueError(f"modality must be 'xray' or 'ecg'; got {modality!r}")
    columns = [*DISEASE_FINDINGS, *details[modality]]
    return [tuple(int(v or 0) for v in row) for row in cohort.select(columns).iter_rows()]


def group_ids(cohort: pl.DataFrame, modality: str = "xray") -> np.ndarray:
    """``(P,)`` int64: :func:`report_groups` as integers (first appearance order), the semantic positives of the
    contrastive loss (``MoreConfig.semantic_positives``)."""
    ids: dict[tuple[int, ...], int] = {}
    return np.array([ids.setdefault(key, len(ids)) for key in report_groups(cohort, modality)], dtype=np.int64)


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
        atomic_save(table, table_file)
        atomic_save(done, done_file)
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


class MoreDataModule(RecipeDataModule):
    """The MoRE cohort for training: the fixed train/val/test split of ``more-cohort``.

    Args:
        image_size: radiograph side (pixels); ``sampling_rate``: ECG rate (Hz, 10 s recordings).
        report_encoder: ``minilm`` (frozen all-MiniLM-L6-v2, embeddings cached), ``minilm_lora`` (MiniLM token ids,
            at most ``text_max_len`` tokens, for the MiniLM tuned with LoRA adapters in the training loop) or
            ``scratch`` (hashed words for the from-scratch transformer; ``vocab_size``, ``text_max_len``).
        max_patients: keep at most this many patients (a deterministic subset, split proportions kept); None = all.
        label_noise: chance a finding's synthesised appearance follows the flipped label.
        missing: ``{modality: rate}`` of patients whose modality is absent (at random), to train and test with gaps.
        template_reports: build the cohort from this many reports written from templates
            (:func:`recipes.medical_more.cohort.template_reports`) instead of the IU reports: no download, for tests
            and offline trials. Cached in ``data_home()/more-cohort-templates-<N>`` unless ``data_dir`` is given.
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
        template_reports: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        data_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if report_encoder not in REPORT_ENCODERS:
            raise ValueError(f"report_encoder must be one of {REPORT_ENCODERS}; got {report_encoder!r}")
        if image_size < 16 or sampling_rate < 50:
            raise ValueError(f"need image_size >= 16 and sampling_rate >= 50; got {image_size}, {sampling_rate}")
        if max_patients is not None and max_patients < 10:
            raise ValueError(f"max_patients must be >= 10 (or null for all); got {max_patients}")
        if template_reports is not None and template_reports < 10:
            raise ValueError(f"template_reports must be >= 10 (or null for the IU reports); got {template_reports}")
        missing = dict(missing or {})
        for name, rate in missing.items():
            if name not in MODALITIES or not 0.0 <= rate < 1.0:
                raise ValueError(f"missing must map xray/ecg/report to a rate in [0, 1); got {missing}")
        self.save_hyperparameters()
        self.image_size, self.sampling_rate = image_size, sampling_rate
        self.ecg_samples = int(round(ECG_SECONDS * sampling_rate))
        self.report_encoder, self.vocab_size, self.text_max_len = report_encoder, vocab_size, text_max_len
        self.max_patients, self.label_noise, self.missing = max_patients, label_noise, missing
        self.template_reports, self.data_dir = template_reports, data_dir
        self.findings = FINDINGS
        self.cohort: pl.DataFrame | None = None

    @property
    def folder(self) -> Path:
        if self.data_dir:
            return Path(self.data_dir)
        if self.template_reports is not None:
            return data_home() / f"more-cohort-templates-{self.template_reports}"
        return data_home() / "more-cohort"

    def prepare_data(self) -> None:
        if self.template_reports is not None:
            if not (self.folder / "cohort.parquet").is_file():
                write_cohort(template_reports(self.template_reports), self.folder)
        elif self.data_dir is None:
            fetch_dataset("more-cohort")
        cohort_arrays(self.folder, self.image_size, self.sampling_rate, self.label_noise, self.seed)
        if self.report_encoder == "minilm":
            texts = pl.read_parquet(self.folder / "cohort.parquet")["text"].to_list()
            report_embeddings(self.folder, texts, self.selected_rows())

    def selected_rows(self) -> np.ndarray:
        """Cohort row numbers used (all, or a deterministic ``max_patients`` subset)."""
        cohort = pl.read_parquet(self.folder / "cohort.parquet", columns=["patient_id"])
        rows = np.arange(cohort.height)
        if self.max_patients is not None and self.max_patients < cohort.height:
            order = np.random.default_rng(self.seed).permutation(cohort.height)
            rows = np.sort(order[: self.max_patients])
        return rows

    def build_splits(self) -> dict[str, TensorRows]:
        """One :class:`TensorRows` per split, holding that split's tensors (``.tensors``)."""
        if not (self.folder / "cohort.parquet").is_file():
            self.prepare_data()
        cohort = pl.read_parquet(self.folder / "cohort.parquet")
        arrays = cohort_arrays(self.folder, self.image_size, self.sampling_rate, self.label_noise, self.seed)
        rows = self.selected_rows()
        self.cohort = cohort.with_row_index("index")[rows]
        rng = np.random.default_rng(self.seed + 1)
        present = {m: torch.from_numpy(rng.random(len(rows)) >= self.missing.get(m, 0.0)) for m in MODALITIES}
        tensors: dict[str, torch.Tensor] = {
            # the scaling every radiograph read from a file gets (readers.load_xray), so training sees what scoring sees
            "xray": torch.from_numpy(normalise_intensity(np.asarray(arrays["xray"][rows], dtype=np.float32))).unsqueeze(1),
            "ecg": torch.from_numpy(np.asarray(arrays["ecg"][rows], dtype=np.float32)),
            "labels": torch.from_numpy(self.cohort.select(FINDINGS).to_numpy().astype(np.float32)),
            "index": torch.from_numpy(rows.astype(np.int64)),
            "group_xray": torch.from_numpy(group_ids(cohort, "xray")[rows]),
            "group_ecg": torch.from_numpy(group_ids(cohort, "ecg")[rows]),
            "group_finding": torch.from_numpy(finding_ids(self.cohort.select(DISEASE_FINDINGS).to_numpy())),
            **{f"present_{m}": mask for m, mask in present.items()},
        }
        if self.report_encoder == "minilm":  # the cohort's embeddings are cached by report_embeddings
            table = report_embeddings(self.folder, cohort["text"].to_list(), rows)
            tensors["report_embedding"] = torch.from_numpy(table[rows].astype(np.float32))
        else:
            tensors.update(report_inputs(self.cohort["text"].to_list(), self.report_encoder, self.text_max_len,
                                         self.vocab_size))
        split = self.cohort["split"].to_numpy()
        # each split keeps its own copy of its rows, so a split's .tensors are that split's
        return {name: TensorRows({k: v[torch.from_numpy(np.flatnonzero(split == name))] for k, v in tensors.items()})
                for name in SPLITS}

    def prompt_inputs(self) -> dict[str, torch.Tensor]:
        """Report inputs of the zero-shot prompts, in :func:`prompt_texts` order (``F · 2 · PROMPTS_PER_SIDE`` rows)."""
        texts = prompt_texts(FINDINGS)
        if self.report_encoder == "minilm":
            # named by the prompts' checksum: editing a prompt embeds the new set
            file = self.folder / f"prompts-minilm-{zlib.crc32(chr(10).join(texts).encode()):08x}.npy"
            if not file.is_file():
                atomic_save(minilm_encode(texts).pooled.numpy(), file)
            return {"report_embedding": torch.from_numpy(np.load(file).astype(np.float32))}
        return report_inputs(texts, self.report_encoder, self.text_max_len, self.vocab_size)
