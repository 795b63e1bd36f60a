"""recipes.longseq_rec.readers: the MovieLens readers on fixtures in the exact file formats, the fetch order and
its integrity check, and the Taobao UserBehavior reader.

Nothing here touches the network: the GroupLens download and pip are replaced by functions writing local files.
"""
from __future__ import annotations

import zipfile

import polars as pl
import pytest

from recipes.longseq_rec import readers
from recipes.longseq_rec.readers import (
    TaobaoFormatError,
    fetch_movielens_100k,
    read_atomic_file,
    read_movielens,
    read_movielens_atomic,
    read_movielens_grouplens,
    read_taobao_user_behavior,
    write_movielens_atomic,
)
from recipes.runtime import datasets
from recipes.runtime.datasets import DatasetFetchError, fetch_dataset
from tests.recipes.longseq_rec.formats import (
    GENRE_SETS,
    TAOBAO_ROWS,
    grouplens_zip,
    movielens_content,
    write_atomic,
    write_grouplens,
)


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to download fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(readers, "try_url", refuse)
    monkeypatch.setattr(datasets, "_pip_download", refuse)


# ---------------------------------------------------------------- MovieLens readers
SMALL_ITEMS = [
    (1, "Toy Story", 1995, ["Animation", "Children's", "Comedy"]),
    (2, 'The "Quoted" Café', 1971, ["unknown"]),
    (3, "Film Noir", 1950, ["Film-Noir", "Thriller"]),
]
SMALL_USERS = [(1, 24, "M", "technician", "85711"), (2, 53, "F", "other", "94043")]
SMALL_RATINGS = [(1, 3, 4, 881250949), (2, 1, 3, 891717742), (1, 2, 1, 878887116)]


def test_atomic_file_reader_parses_typed_header(tmp_path):
    folder = write_atomic(tmp_path, SMALL_RATINGS, SMALL_ITEMS, SMALL_USERS)
    item = read_atomic_file(folder / "ml-100k.item")
    assert item.columns == ["item_id", "movie_title", "release_year", "class"]
    assert item["class"].to_list()[0] == ["Animation", "Children's", "Comedy"]
    inter = read_atomic_file(folder / "ml-100k.inter")
    assert inter.schema["rating"] == pl.Float64 and inter["timestamp"].to_list() == [881250949.0, 891717742.0, 878887116.0]
    (tmp_path / "bad.inter").write_text("user_id\titem_id:token\n1\t2\n")
    with pytest.raises(ValueError, match="header field 'user_id' is not name:type"):
        read_atomic_file(tmp_path / "bad.inter")


def test_atomic_reader_normalises_movielens(tmp_path):
    items = SMALL_ITEMS + [(4, "unkonwn", "unkonwn", ["unknown"])]  # RecBole's own spelling for item 267
    frames = read_movielens_atomic(write_atomic(tmp_path, SMALL_RATINGS, items, SMALL_USERS))
    assert frames.ratings.schema == {"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64}
    assert frames.ratings.rows()[0] == (1, 3, 4.0, 881250949)
    assert frames.items["title"].to_list()[1] == 'The "Quoted" Café'
    assert frames.items["release_year"].to_list() == [1995, 1971, 1950, None]
    assert frames.users.row(1) == (2, 53, "F", "other", "94043")


def test_grouplens_reader_matches_the_atomic_reader(tmp_path):
    atomic = read_movielens(write_atomic(tmp_path / "a", SMALL_RATINGS, SMALL_ITEMS, SMALL_USERS))
    grouplens = read_movielens(write_grouplens(tmp_path / "g", SMALL_RATINGS, SMALL_ITEMS, SMALL_USERS))
    for name in ("ratings", "items", "users"):
        assert getattr(grouplens, name).equals(getattr(atomic, name)), name
    assert grouplens.items["title"].to_list()[1] == 'The "Quoted" Café'  # Latin-1 decoded, year stripped


def test_grouplens_reader_finds_an_unzipped_download_folder(tmp_path):
    write_grouplens(tmp_path / "ml-100k", SMALL_RATINGS, SMALL_ITEMS, SMALL_USERS)
    assert read_movielens(tmp_path).ratings.height == 3
    with pytest.raises(FileNotFoundError, match="u.data/u.item/u.user"):
        read_movielens(tmp_path / "ml-100k" / "nothing-here")


def test_atomic_writer_round_trips(tmp_path):
    frames = read_movielens_grouplens(write_grouplens(tmp_path / "g", SMALL_RATINGS, SMALL_ITEMS, SMALL_USERS))
    again = read_movielens_atomic(write_movielens_atomic(frames, tmp_path / "a"))
    for name in ("ratings", "items", "users"):
        assert getattr(again, name).equals(getattr(frames, name)), name


# ---------------------------------------------------------------- fetch order and integrity
def test_local_path_wins_over_cache_and_downloads(ml_folder, tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path))
    (tmp_path / "movielens-100k").mkdir()  # an (empty) cache must not be consulted
    assert fetch_dataset("movielens-100k", path=ml_folder) == ml_folder


def test_cache_is_used_before_any_download(ml_folder, tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path))
    cache = tmp_path / "movielens-100k"
    cache.mkdir()
    for path in ml_folder.iterdir():
        (cache / path.name).write_bytes(path.read_bytes())
    assert fetch_dataset("movielens-100k") == cache


def test_official_zip_is_converted_to_atomic_files(tmp_path, monkeypatch):
    content = movielens_content()
    source = grouplens_zip(tmp_path / "src" / "ml-100k.zip", *content)
    urls = []

    def fake_try_url(url, dest, timeout=10.0):
        urls.append(url)
        dest.write_bytes(source.read_bytes())
        return dest

    monkeypatch.setattr(readers, "try_url", fake_try_url)
    monkeypatch.setattr(datasets, "_pip_download", lambda *a: pytest.fail("pip used although the zip worked"))
    dest = tmp_path / "cache" / "movielens-100k"
    assert fetch_movielens_100k(None, dest) == dest
    assert urls == [readers.ML100K_URL]
    assert sorted(p.name for p in dest.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    assert read_movielens_atomic(dest).items["genres"].to_list()[0] == GENRE_SETS[1]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["movielens-100k"]


def test_pip_wheel_is_the_last_resort(tmp_path, monkeypatch):
    """Offline: the URL fails, so the ml-100k folder comes out of a (fake) recbole wheel."""
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(readers, "try_url", lambda url, dest, timeout=10.0: None)
    atomic = write_atomic(tmp_path / "wheel-src", *movielens_content())
    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path in atomic.iterdir():
            archive.write(path, f"recbole/dataset_example/ml-100k/{path.name}")
        archive.writestr("recbole/__init__.py", "raise ImportError('never imported')")
    requested = []

    def fake_download(package, version, into):
        requested.append(f"{package}=={version}")
        into.mkdir(parents=True, exist_ok=True)
        return wheel

    monkeypatch.setattr(datasets, "_pip_download", fake_download)
    folder = fetch_dataset("movielens-100k")
    assert requested == ["recbole==1.2.1"]
    assert folder == tmp_path / "cache" / "movielens-100k"
    assert sorted(p.name for p in folder.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]


def test_count_check_catches_a_truncated_cache(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path))
    ratings, items, users = movielens_content()
    write_atomic(tmp_path / "movielens-100k", ratings[:99_990], items, users)
    with pytest.raises(DatasetFetchError, match=r"truncated: ratings 99,990 \(expected 100,000\).*--force"):
        fetch_dataset("movielens-100k")
    write_atomic(tmp_path / "short", ratings, items[:-1], users)
    with pytest.raises(DatasetFetchError, match=r"items 1,681 \(expected 1,682\)"):
        fetch_dataset("movielens-100k", path=tmp_path / "short")


# ---------------------------------------------------------------- Taobao
def test_taobao_reader_scans_the_exact_format(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text("\n".join(TAOBAO_ROWS) + "\n")
    frame = read_taobao_user_behavior(path)
    assert isinstance(frame, pl.LazyFrame)
    frame = frame.collect()
    assert frame.columns == ["line", "user_id", "item_id", "category_id", "behavior_type", "timestamp"]
    assert frame.height == len(TAOBAO_ROWS) and frame["line"].to_list() == list(range(1, 14))
    assert frame.row(2) == (3, 1, 2576651, 149192, "buy", 1511572885)
    assert frame.schema["user_id"] == pl.Int64 and frame.schema["behavior_type"] == pl.Enum(["pv", "buy", "cart", "fav"])


def test_taobao_bad_rows_name_file_and_line(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    rows = TAOBAO_ROWS[:2] + ["1,abc,2520771,pv,1511561733", "2,5,6,like,1511561733", "3,5,6,pv", "4,5,6,pv,1,9"]
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(TaobaoFormatError) as caught:
        read_taobao_user_behavior(path)
    message = str(caught.value)
    assert str(path) in message and "4 malformed" in message
    for expected in ("line 3: '1,abc,2520771,pv,1511561733'", "line 4: '2,5,6,like,", "line 5: '3,5,6,pv'",
                     "line 6: '4,5,6,pv,1' (more than 5 fields)"):
        assert expected in message
    kept = read_taobao_user_behavior(path, on_bad_rows="drop").collect()
    assert kept["line"].to_list() == [1, 2]
