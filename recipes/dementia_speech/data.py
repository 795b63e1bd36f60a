"""Data of the dementia recipe: the ``dementia-cohort`` data set and the DataModule with its cached features.

Rows come from :func:`recipes.dementia_speech.readers.adress.load_cohort_frame` — the embedded cohort (``source/``
and ``target/`` folders in the ADReSS layout; the registered data set, or a cohort of another size given by
``--data.cohort``) or a real ADReSS copy (``--data.root``; source domain only). Each row becomes a 3-channel
log-Mel/Δ/ΔΔ image (:mod:`recipes.dementia_speech.audio`) and its transcript the text branch's input
(:mod:`recipes.dementia_speech.text`: frozen MiniLM token embeddings, MiniLM word-piece ids for the LoRA-tuned
encoder, or hashed word ids). With ``acoustic="features"`` or ``"both"`` each recording's acoustic markers (eGeMAPS
functionals and pause statistics, :mod:`recipes.dementia_speech.acoustic`) come too. All are computed once (in
``prepare_data``) and cached next to the data.

Splits: the source ``train`` speakers are split into ``num_folds`` speaker folds (stratified by label); fold
``fold`` is validation, the rest training. ``test`` holds the source test speakers (domain 0) and the target
test speakers (domain 1). The target ``train`` speakers are the unlabelled adaptation data: their labels are
never loaded into a training batch.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader

from fusion_core.encoders.text import HashTokenizer
from fusion_core.encoders.text_minilm import MINILM_DIM, MINILM_MAX_TOKENS
from recipes.dementia_speech.audio import SAMPLE_RATE, FeatureConfig, audio_images, load_waveform, transcribe
from recipes.dementia_speech.cohort import COHORT_VERSION, CohortSpec, generate_cohort
from recipes.dementia_speech.config import ACOUSTIC_ENCODERS, TEXT_ENCODERS
from recipes.dementia_speech.readers.adress import load_cohort_frame
from recipes.dementia_speech.text import encode_texts
from recipes.runtime.datamodule import SPLITS, RecipeDataModule, TensorRows
from recipes.runtime.datasets import DatasetSpec, data_home, progress, register_dataset, replace_dir

__all__ = ["DementiaDataModule", "fetch_dementia_cohort", "DATASET_NAME", "MARKERS_VERSION"]

DATASET_NAME = "dementia-cohort"
#: bumped when the acoustic markers change, so a cache of older markers is never served
MARKERS_VERSION = 1


# --- the data set -------------------------------------------------------------------------------------------
def fetch_dementia_cohort(path: Path | None, dest: Path, spec: CohortSpec = CohortSpec()) -> Path:
    """A local copy (``--path``: a cohort folder or an ADReSS-layout folder) as is; otherwise the cohort of ``spec``
    in ``dest``, generated once (about 0.2 CPU-seconds a speaker with espeak-ng: 15 s for the default 144 speakers,
    a minute and a half for the 1,760 of :data:`recipes.dementia_speech.cohort.LARGE_COHORT`)."""
    if path is not None:
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a folder; pass the folder holding train/ (and test/) of ADReSS")
        return path
    manifest = dest / "cohort.json"
    if manifest.is_file() and json.loads(manifest.read_text()) == {"version": COHORT_VERSION, **asdict(spec)}:
        return dest
    # one staging folder per cohort, not per process: an interrupted generation continues where it stopped
    staging = dest.with_name(f".{dest.name}.staging")
    progress(f"{DATASET_NAME}: generating {spec} with espeak-ng into {dest}")
    generate_cohort(staging, spec)
    return replace_dir(staging, dest)


register_dataset(DatasetSpec(
    name=DATASET_NAME,
    description="Synthetic picture descriptions (Cookie-Theft kind) spoken by espeak-ng: 144 speakers, clean 16 kHz "
                "source and telephone 8 kHz target domain; ADReSS layout; generated locally",
    fetch=fetch_dementia_cohort,
    card="data_cards/dementia-cohort.md",
))


def _transcribe_missing(frame: pl.DataFrame, waves: list[np.ndarray] | None,
                        cached: list[str] | None = None) -> pl.DataFrame:
    """Fill the transcripts a recording has no ``.cha`` for: from ``cached`` (an earlier run's ASR) or with
    :func:`transcribe`; ``transcript_source`` says ``manual`` or ``asr``."""
    missing = frame["transcript"].is_null().to_numpy()
    if not missing.any():
        return frame
    if cached is None:
        if waves is None:
            raise ValueError("waves are needed to transcribe recordings without a transcript")
        progress(f"dementia: transcribing {int(missing.sum())} recordings without a transcript (pocketsphinx)")
        texts = frame["transcript"].to_list()
        cached = [transcribe(w) if m else t for w, m, t in zip(waves, missing, texts)]
    return frame.with_columns(
        pl.Series("transcript", cached, dtype=pl.Utf8),
        pl.when(pl.Series(missing)).then(pl.lit("asr")).otherwise(pl.col("transcript_source")).alias("transcript_source"),
    )


def _speaker_folds(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """Fold of each speaker, stratified by label."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(labels), dtype=np.int64)
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        folds[members] = np.arange(len(members)) % num_folds
    return folds


class DementiaDataModule(RecipeDataModule):
    """Speaker-level splits of the cohort (or an ADReSS copy) with cached audio images and text inputs.

    Args:
        dataset: registered data set to fetch when neither ``root`` nor ``cohort`` is given.
        root: a cohort folder or an ADReSS-layout folder.
        cohort: fields of :class:`recipes.dementia_speech.cohort.CohortSpec` (speakers per domain and split, seed)
            for a cohort of another size, generated once under ``$FUSION_DATA_DIR`` (small runs and tests).
        acoustic: the model's acoustic encoder (``vit``, ``features``, ``both``); ``features`` and ``both`` add the
            acoustic markers ``acoustic (N, F)`` to the inputs.
        text_encoder: ``minilm`` (frozen pretrained token embeddings, cached), ``minilm_lora`` (MiniLM word-piece
            ids; the model runs MiniLM with trainable LoRA adapters) or ``scratch`` (hashed word ids).
        max_text_tokens: transcript length in tokens (longer transcripts are cut); ``text_vocab_size``: hashed ids.
        image_size, n_mels, n_fft, hop_length, max_seconds: the audio front end.
        num_folds, fold: speaker cross-validation; fold ``fold`` is the validation set.
        use_target: give unlabelled target-domain batches to the training step (for OT).
    """

    def __init__(
        self,
        dataset: str = DATASET_NAME,
        root: str | None = None,
        cohort: dict[str, int] | None = None,
        acoustic: str = "vit",
        text_encoder: str = "minilm",
        max_text_tokens: int = 96,
        text_vocab_size: int = 4096,
        image_size: int = 64,
        n_mels: int = 64,
        n_fft: int = 512,
        hop_length: int = 160,
        max_seconds: float = 60.0,
        batch_size: int = 16,
        num_folds: int = 5,
        fold: int = 0,
        use_target: bool = True,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2; got {batch_size}")
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder={text_encoder!r}; choose one of {list(TEXT_ENCODERS)}")
        if acoustic not in ACOUSTIC_ENCODERS:
            raise ValueError(f"acoustic={acoustic!r}; choose one of {list(ACOUSTIC_ENCODERS)}")
        limit = MINILM_MAX_TOKENS if text_encoder != "scratch" else None
        if max_text_tokens < 2 or (limit is not None and max_text_tokens > limit):
            raise ValueError(f"max_text_tokens={max_text_tokens}; the text branch reads 2 (the class token and a word) "
                             f"to {limit or 'any number of'} tokens")
        if num_folds < 2 or not 0 <= fold < num_folds:
            raise ValueError(f"need num_folds >= 2 and 0 <= fold < num_folds; got num_folds={num_folds}, fold={fold}")
        if cohort is not None and root is not None:
            raise ValueError("give root (a folder to read) or cohort (a cohort to generate), not both")
        self.spec = None if cohort is None else _cohort_spec(cohort)
        self.save_hyperparameters()
        self.features = FeatureConfig.build(SAMPLE_RATE, n_fft, hop_length, n_mels, image_size, max_seconds)
        self.frame: pl.DataFrame | None = None
        self.tensors: dict[str, torch.Tensor] = {}
        self.split_rows: dict[str, np.ndarray] = {}
        self.target: TensorRows | None = None
        self._root: Path | None = None

    # sizes linked into the model's config
    @property
    def text_dim(self) -> int:
        return MINILM_DIM if self.hparams.text_encoder != "scratch" else 0

    @property
    def image_size(self) -> int:
        return self.hparams.image_size

    @property
    def text_encoder(self) -> str:
        return self.hparams.text_encoder

    @property
    def acoustic(self) -> str:
        return self.hparams.acoustic

    @property
    def acoustic_features(self) -> int:
        """How many acoustic markers each row has (0 with ``acoustic="vit"``)."""
        from recipes.dementia_speech.acoustic import PAUSE_FEATURES

        return 88 + len(PAUSE_FEATURES) if self.hparams.acoustic != "vit" else 0

    @property
    def text_vocab_size(self) -> int:
        return self.hparams.text_vocab_size

    @property
    def root(self) -> Path:
        """The folder read: ``root``, the generated ``cohort``, or the registered data set (fetched on first use)."""
        if self._root is None:
            h = self.hparams
            if h.root:
                self._root = Path(h.root)
            elif self.spec is not None:
                folder = "-".join(str(v) for v in asdict(self.spec).values())
                self._root = fetch_dementia_cohort(None, data_home() / f"{DATASET_NAME}-{folder}", self.spec)
            else:
                from recipes.runtime.datasets import fetch_dataset

                cached = data_home() / h.dataset
                self._root = cached if (cached / "cohort.json").is_file() else fetch_dataset(h.dataset)
        return self._root

    def _cache_file(self, frame: pl.DataFrame) -> Path:
        h = self.hparams
        text = [h.text_encoder, h.max_text_tokens, h.text_vocab_size]
        if h.text_encoder == "scratch":
            text.append(HashTokenizer.SCHEME)  # cached ids of another hashing scheme are never served
        key = json.dumps({"rows": frame.select("wav_path", "transcript").rows(), "features": self.features,
                          "text": text, "seconds": 1}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.root / "cache" / f"features-{digest}.pt"

    def _markers_file(self, frame: pl.DataFrame) -> Path:
        key = json.dumps({"rows": frame["wav_path"].to_list(), "max_seconds": self.features["max_seconds"],
                          "version": MARKERS_VERSION})
        return self.root / "cache" / f"markers-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"

    def load_markers(self, frame: pl.DataFrame) -> torch.Tensor:
        """``(N, F)`` acoustic markers of every row: from the cache, or computed (VAD and openSMILE, about 0.5
        CPU-seconds a recording, openSMILE on every core) and cached."""
        from recipes.dementia_speech.acoustic import acoustic_features

        cache = self._markers_file(frame)
        if cache.is_file():
            return torch.load(cache, weights_only=True)
        progress(f"dementia: acoustic markers (eGeMAPS, pauses) of {frame.height} recordings (cached in {cache.parent})")
        waves = [load_waveform(p, SAMPLE_RATE, self.features["max_seconds"]) for p in frame["wav_path"]]
        started, reported = time.perf_counter(), [0]

        def report(done: int, total: int) -> None:  # every tenth: a large cohort takes minutes
            if done * 10 // total > reported[0]:
                reported[0] = done * 10 // total
                progress(f"dementia: acoustic markers {done}/{total} ({time.perf_counter() - started:.0f} s)")

        markers = torch.from_numpy(acoustic_features(waves, on_progress=report))
        _atomic_save(markers, cache)
        return markers

    def load_features(self) -> tuple[pl.DataFrame, dict[str, torch.Tensor]]:
        """Every row of the data set (ASR transcripts filled in) and its model inputs ``image``, ``text`` or
        ``text_ids``, ``text_mask``: from the cache, or computed and cached."""
        frame = load_cohort_frame(self.root)
        cache = self._cache_file(frame)
        if cache.is_file():
            tensors = torch.load(cache, weights_only=True)
            frame = _transcribe_missing(frame, None, tensors.pop("asr_transcripts", None))
        else:
            progress(f"dementia: computing features of {frame.height} recordings (cached in {cache.parent})")
            waves = [load_waveform(p, SAMPLE_RATE, self.features["max_seconds"]) for p in frame["wav_path"]]
            frame = _transcribe_missing(frame, waves)
            h = self.hparams
            tensors = {"image": audio_images(waves, self.features), "asr_transcripts": frame["transcript"].to_list(),
                       "seconds": torch.tensor([len(w) / SAMPLE_RATE for w in waves], dtype=torch.float32),
                       **encode_texts(frame["transcript"].to_list(), h.text_encoder, h.max_text_tokens, h.text_vocab_size)}
            _atomic_save(tensors, cache)
            tensors.pop("asr_transcripts")
        if self.hparams.acoustic != "vit":
            tensors["acoustic"] = self.load_markers(frame)
        return frame, tensors

    def prepare_data(self) -> None:
        self.load_features()  # fetches (generates) the data set and caches the features once, on local rank 0

    def build_splits(self) -> dict[str, TensorRows]:
        frame, tensors = self.load_features()
        tensors["label"] = torch.tensor(frame["label"].fill_null(-1).to_numpy(), dtype=torch.float32)
        tensors["domain"] = torch.tensor(frame["domain"].to_numpy(), dtype=torch.long)
        tensors["index"] = torch.arange(frame.height)
        self.frame, self.tensors = frame, tensors

        split = frame["split"].to_numpy()
        domain = frame["domain"].to_numpy()
        source_train = np.flatnonzero((split == "train") & (domain == 0))
        folds = _speaker_folds(frame["label"].to_numpy()[source_train], self.hparams.num_folds, self.seed)
        labelled_test = (split == "test") & (frame["label"].is_not_null().to_numpy())
        self.split_rows = {
            "train": source_train[folds != self.hparams.fold],
            "val": source_train[folds == self.hparams.fold],
            "test": np.flatnonzero(labelled_test),
            "target": np.flatnonzero((split == "train") & (domain == 1)),
        }
        self.target = TensorRows({k: v for k, v in tensors.items() if k != "label"}, self.split_rows["target"])
        return {name: TensorRows(tensors, self.split_rows[name]) for name in SPLITS}

    def training_markers(self) -> torch.Tensor:
        """``(N_train, F)`` acoustic markers of the training rows, what the model's marker standardisation is fit on."""
        self.setup()
        return self.tensors["acoustic"][torch.as_tensor(self.split_rows["train"])]

    def shortest_training_seconds(self) -> float:
        """The shortest training recording (after the ``max_seconds`` cut): a scored clip shorter than it gets a
        warning."""
        self.setup()
        return float(self.tensors["seconds"][torch.as_tensor(self.split_rows["train"])].min())

    def speech_floors(self) -> dict[str, float] | None:
        """Half the least voicing (:class:`recipes.dementia_speech.acoustic.Voicing`) of the recordings the model trains
        on — the source training and the unlabelled target speakers: a scored recording the VAD hears no speech in
        needs at least this much to be scored. None without the acoustic markers (``acoustic="vit"``)."""
        from recipes.dementia_speech.acoustic import speech_floors

        self.setup()
        if "acoustic" not in self.tensors:
            return None
        rows = torch.as_tensor(np.concatenate([self.split_rows["train"], self.split_rows["target"]]))
        return speech_floors(self.tensors["acoustic"][rows].double().numpy())

    def rows(self, split: str) -> pl.DataFrame:
        """The raw rows of ``split`` (``train``, ``val``, ``test``, ``target``)."""
        self.setup()
        return self.frame[self.split_rows[split].tolist()]

    def train_dataloader(self):
        """Source batches, each paired with an unlabelled target-domain batch (``{"source": ..., "target": ...}``)
        when ``use_target`` and the data have a target domain; the shorter loader cycles."""
        from lightning.pytorch.utilities import CombinedLoader

        self.setup()
        loaders = {"source": self.loader("train")}
        if self.hparams.use_target and len(self.target) >= 2:
            loaders["target"] = DataLoader(self.target, batch_size=self.batch_size, shuffle=True,
                                           generator=torch.Generator().manual_seed(self.seed),
                                           drop_last=len(self.target) > self.batch_size, num_workers=self.num_workers,
                                           persistent_workers=self.num_workers > 0)
        return CombinedLoader(loaders, mode="max_size_cycle")


def _atomic_save(value, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(value, tmp)
    os.replace(tmp, path)  # a reader never sees a half-written cache


def _cohort_spec(fields: dict[str, int]) -> CohortSpec:
    known = set(CohortSpec.__dataclass_fields__)
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"cohort has no field(s) {unknown}; its fields are {sorted(known)}")
    return CohortSpec(**{k: int(v) for k, v in fields.items()})
