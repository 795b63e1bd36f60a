"""recipes.longseq_rec.data: readers on fixtures in the exact file formats, the fetch order, the Taobao loader,
the lifelong generator, task construction, batches, the vocabulary and the raw scoring schema.

Nothing here touches the network: the GroupLens download and pip are replaced by functions writing local files.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from recipes.longseq_rec import data as recdata
from recipes.longseq_rec.data import (
    GROUPLENS_GENRES,
    LifelongData,
    RecDataModule,
    RecVocab,
    TaobaoFormatError,
    encode_scoring_frame,
    export_scoring_frame,
    fetch_movielens_100k,
    generate_lifelong,
    read_atomic_file,
    read_movielens,
    read_movielens_atomic,
    read_movielens_grouplens,
    read_taobao_user_behavior,
    time_bucket,
    write_movielens_atomic,
)
from recipes.runtime import datasets
from recipes.runtime.datasets import DatasetFetchError, fetch_dataset

BATCH_DTYPES = {
    "user": torch.long, "profile": torch.long, "target_item": torch.long, "target_cate": torch.long,
    "hist_item": torch.long, "hist_cate": torch.long, "hist_time": torch.long, "hist_mask": torch.bool,
    "label": torch.float32, "relevant": torch.bool,
}
OCCUPATIONS = ("student", "engineer", "writer", "other", "artist")
GENRE_SETS = (["Animation", "Children's", "Comedy"], ["Drama"], ["Action", "Sci-Fi"], ["unknown"], ["Film-Noir", "Thriller"])


# ---------------------------------------------------------------- fixtures in the exact file formats
def movielens_content(num_ratings: int = 100_000, num_users: int = 943, num_items: int = 1_682):
    """Rows for a synthetic ML-100K: every user rates ~106 distinct items, every item is rated."""
    row = np.arange(num_ratings)
    user = row % num_users + 1
    occurrence = row // num_users
    item = (user * 13 + occurrence) % num_items + 1
    stamp = 880_000_000 + occurrence * 3_600 + user * 7
    rating = row % 5 + 1
    ratings = list(zip(user.tolist(), item.tolist(), rating.tolist(), stamp.tolist()))
    items = [(i, f"Movie {i}", 1990 + i % 9, GENRE_SETS[i % len(GENRE_SETS)]) for i in range(1, num_items + 1)]
    users = [(u, 15 + u % 50, "MF"[u % 2], OCCUPATIONS[u % len(OCCUPATIONS)], f"{10000 + u}") for u in range(1, num_users + 1)]
    return ratings, items, users


def write_atomic(folder: Path, ratings, items, users) -> Path:
    """RecBole's atomic files, byte for byte in its layout (tab separated, typed header)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    lines += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in ratings]
    (folder / "ml-100k.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"]
    lines += [f"{i}\t{title}\t{year}\t{' '.join(genres)}" for i, title, year, genres in items]
    (folder / "ml-100k.item").write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"]
    lines += [f"{u}\t{age}\t{g}\t{occ}\t{z}" for u, age, g, occ, z in users]
    (folder / "ml-100k.user").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_grouplens(folder: Path, ratings, items, users) -> Path:
    """The original GroupLens files: u.data (tabs), u.item and u.user (pipes, Latin-1)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    lines = []
    for i, title, year, genres in items:
        flags = "|".join("1" if g in genres else "0" for g in GROUPLENS_GENRES)
        date = f"01-Jan-{year}" if year is not None else ""
        lines.append(f"{i}|{title} ({year})|{date}||http://us.imdb.com/M/title-exact?x|{flags}")
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    (folder / "u.user").write_bytes("".join(f"{u}|{a}|{g}|{o}|{z}\n" for u, a, g, o, z in users).encode("latin-1"))
    return folder


def grouplens_zip(path: Path, ratings, items, users) -> Path:
    folder = write_grouplens(path.parent / "zip-src", ratings, items, users)
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("u.data", "u.item", "u.user"):
            archive.write(folder / name, f"ml-100k/{name}")
        archive.writestr("ml-100k/README", "MovieLens")
    return path


@pytest.fixture(scope="module")
def ml_folder(tmp_path_factory) -> Path:
    """A complete-sized ML-100K in RecBole's atomic layout (passes the count check)."""
    return write_atomic(tmp_path_factory.mktemp("ml") / "atomic", *movielens_content())


@pytest.fixture(scope="module")
def ml_module(ml_folder) -> RecDataModule:
    return RecDataModule(data_path=str(ml_folder), max_users=12, max_history=8, batch_size=4, seed=3)


@pytest.fixture(scope="module")
def lifelong() -> LifelongData:
    return generate_lifelong(num_users=12, history_length=60, num_items=48, num_cates=4, num_interests=2,
                             relevant_per_target=2, seed=5, num_themes=3, targets_per_user=3, recent_window=10)


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to download fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(recdata, "try_url", refuse)
    monkeypatch.setattr(datasets, "_pip_download", refuse)


# ---------------------------------------------------------------- readers
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

    monkeypatch.setattr(recdata, "try_url", fake_try_url)
    monkeypatch.setattr(datasets, "_pip_download", lambda *a: pytest.fail("pip used although the zip worked"))
    dest = tmp_path / "cache" / "movielens-100k"
    assert fetch_movielens_100k(None, dest) == dest
    assert urls == [recdata.ML100K_URL]
    assert sorted(p.name for p in dest.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    assert read_movielens_atomic(dest).items["genres"].to_list()[0] == GENRE_SETS[1]
    assert sorted(p.name for p in dest.parent.iterdir()) == ["movielens-100k"]


def test_pip_wheel_is_the_last_resort(tmp_path, monkeypatch):
    """Offline: the URL fails, so the ml-100k folder comes out of a (fake) recbole wheel."""
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(recdata, "try_url", lambda url, dest, timeout=10.0: None)
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
TAOBAO_ROWS = [
    "1,2268318,2520377,pv,1511544070",
    "1,2333346,2520771,pv,1511561733",
    "1,2576651,149192,buy,1511572885",
    "2,3830808,4181361,pv,1511593493",
    "2,4365585,2520377,cart,1511596146",
    "2,4606018,2735466,fav,1511616481",
    "3,230380,411153,pv,1511644942",
    "3,3827899,2920476,pv,1511713473",
    "3,2268318,2520377,buy,1511725471",
    "4,4666650,4145813,pv,1511744089",
    "4,2333346,2520771,pv,1511760055",
    "4,1305059,149192,fav,1511780051",
    "4,2268318,2520377,pv,1511790051",
]


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


def test_taobao_data_module(tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text("\n".join(TAOBAO_ROWS) + "\n")
    module = RecDataModule(dataset="taobao", data_path=str(path), max_history=5, batch_size=4, user_hash_buckets=7)
    assert module.num_users == 5 and module.num_items == 11 and module.profile_cardinalities == [8]
    # users 1-3 have three behaviours (a val and a test target), user 4 four (one train target too)
    assert {name: len(s) for name, s in module.splits.items()} == {"train": 2, "val": 8, "test": 8}
    batch = next(iter(module.test_dataloader()))
    assert batch["profile"].shape == (4, 1) and 1 <= int(batch["profile"].min()) and int(batch["profile"].max()) <= 7
    only_views = RecDataModule(dataset="taobao", data_path=str(path), taobao_behaviors=["pv"])
    assert only_views.num_items == 7
    two_users = RecDataModule(dataset="taobao", data_path=str(path), max_users=2, seed=1)
    assert two_users.num_users == 3 and two_users.vocab.users["user_id"].is_in([1, 2, 3, 4]).all()
    with pytest.raises(ValueError, match="needs data_path"):
        RecDataModule(dataset="taobao")


# ---------------------------------------------------------------- lifelong generator
def test_generator_is_deterministic(lifelong):
    again = generate_lifelong(num_users=12, history_length=60, num_items=48, num_cates=4, num_interests=2,
                              relevant_per_target=2, seed=5, num_themes=3, targets_per_user=3, recent_window=10)
    for name in LifelongData._ARRAYS:
        np.testing.assert_array_equal(getattr(again, name), getattr(lifelong, name), err_msg=name)
    other = generate_lifelong(num_users=12, history_length=60, num_items=48, num_cates=4, num_interests=2,
                              relevant_per_target=2, seed=6, num_themes=3, targets_per_user=3, recent_window=10)
    assert not np.array_equal(other.hist_item, lifelong.hist_item)


def test_generator_shapes_and_time(lifelong):
    assert lifelong.hist_item.shape == (12, 60) and lifelong.hist_timestamp.shape == (12, 60)
    assert lifelong.target_item.shape == lifelong.label.shape == (12, 3)
    assert lifelong.planted_positions.shape == (12, 3, 2)
    assert lifelong.hist_item.min() >= 1 and lifelong.hist_item.max() <= 48
    assert np.all(np.diff(lifelong.hist_timestamp, axis=1) >= 0)
    assert np.all(lifelong.target_timestamp > lifelong.hist_timestamp[:, -1])
    assert set(np.unique(lifelong.label)) == {0, 1}


def test_relevant_behaviours_are_exactly_where_planted(lifelong):
    cate, theme = lifelong.item_cate, lifelong.item_theme
    for user in range(lifelong.num_users):
        hist_cate, hist_theme = cate[lifelong.hist_item[user]], theme[lifelong.hist_item[user]]
        # history categories come from the user's interests only
        assert set(hist_cate) <= set(lifelong.user_interests[user])
        planted_all = lifelong.planted_positions[user].reshape(-1)
        assert len(set(planted_all)) == planted_all.size and planted_all.max() < 60 - 10  # outside the recent window
        for target in range(3):
            item = lifelong.target_item[user, target]
            same_theme = np.flatnonzero((hist_cate == cate[item]) & (hist_theme == theme[item]))
            planted = lifelong.planted_positions[user, target]
            assert np.all(hist_cate[planted] == cate[item])  # relevant and decoys share the category
            if lifelong.label[user, target]:
                assert sorted(same_theme) == sorted(planted)
                np.testing.assert_array_equal(np.flatnonzero(lifelong.relevant_mask(user, target)), np.sort(planted))
            else:
                assert same_theme.size == 0 and not lifelong.relevant_mask(user, target).any()


def test_generator_plants_far_back_and_checks_arguments():
    data = generate_lifelong(num_users=64, history_length=1_000, num_items=200, num_cates=10, num_interests=3,
                             relevant_per_target=3, seed=0, num_themes=4, targets_per_user=2)
    assert np.median(data.planted_positions) < 400  # density ∝ (1 − p/H₀)²: mostly the distant past
    with pytest.raises(ValueError, match="multiple of num_cates × num_themes.*num_items=200"):
        generate_lifelong(num_items=190, num_cates=10, num_themes=4)
    with pytest.raises(ValueError, match="targets_per_user must be in \\[1, num_interests × \\(num_themes − 1\\) = 4\\]"):
        generate_lifelong(num_items=40, num_cates=4, num_themes=2, targets_per_user=5)
    with pytest.raises(ValueError, match="history_length \\(10\\) must be at least"):
        generate_lifelong(num_users=2, history_length=10, num_items=40, num_cates=4, num_themes=2, targets_per_user=2)


def test_lifelong_save_load_and_data_module(lifelong, tmp_path):
    folder = lifelong.save(tmp_path / "lifelong")
    loaded = LifelongData.load(folder)
    np.testing.assert_array_equal(loaded.planted_positions, lifelong.planted_positions)
    assert loaded.params == lifelong.params
    module = RecDataModule(dataset="lifelong-synthetic", data_path=str(folder), max_history=60, batch_size=8, seed=1)
    assert module.num_items == 49 and module.num_cates == 5 and module.profile_cardinalities == [1001]
    assert {name: len(s) for name, s in module.splits.items()} == {"train": 30, "val": 3, "test": 3}
    users = {name: set(s.user_row.tolist()) for name, s in module.splits.items()}
    assert not (users["train"] & users["test"]) and not (users["val"] & users["test"])  # split by user
    samples = module.splits["train"]
    batch = module.batch_builder("train")(np.arange(len(samples)))
    for row in range(len(samples)):
        user, target = int(samples.user_row[row]), row % 3
        assert module.vocab.item_raw(batch["target_item"][row : row + 1].numpy())[0] == lifelong.target_item[user, target]
        np.testing.assert_array_equal(batch["relevant"][row].numpy(), lifelong.relevant_mask(user, target))
    frame = export_scoring_frame(module, "test")
    encoded = encode_scoring_frame(module.vocab, frame, 60, module.num_time_buckets)
    expected = module.batch_builder("test")(np.arange(frame.height))
    assert encoded.valid_rows == list(range(frame.height))
    assert all(torch.equal(encoded.batch[k], expected[k]) for k in BATCH_DTYPES if k != "relevant")
    # A shorter window shifts the planted positions and drops those it cannot see.
    short = RecDataModule(dataset="lifelong-synthetic", data_path=str(folder), max_history=25, seed=1)
    batch = short.batch_builder("train")(np.arange(len(samples)))
    for row in range(len(samples)):
        user, target = int(samples.user_row[row]), row % 3
        np.testing.assert_array_equal(batch["relevant"][row].numpy(), lifelong.relevant_mask(user, target)[-25:])


def test_lifelong_fetch_generates_once_into_the_cache(lifelong, tmp_path, monkeypatch):
    """The registered fetch writes the default configuration to the cache and reuses it while it matches."""
    monkeypatch.setenv("FUSION_DATA_DIR", str(tmp_path))
    defaults = recdata.LIFELONG_DEFAULTS
    assert defaults["history_length"] == 10_000 and "verbose" not in defaults
    calls = []

    def small_generator(**kwargs):
        calls.append(kwargs)
        return LifelongData(**{name: getattr(lifelong, name) for name in LifelongData._ARRAYS}, params=dict(defaults))

    monkeypatch.setattr(recdata, "generate_lifelong", small_generator)
    folder = fetch_dataset("lifelong-synthetic")
    assert folder == tmp_path / "lifelong-synthetic" and len(calls) == 1
    assert fetch_dataset("lifelong-synthetic") == folder and len(calls) == 1  # cache hit
    np.testing.assert_array_equal(LifelongData.load(folder).hist_item, lifelong.hist_item)
    (folder / "params.json").write_text('{"seed": 99}')  # another configuration: generate the defaults again
    fetch_dataset("lifelong-synthetic")
    assert len(calls) == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["lifelong-synthetic"]
    assert fetch_dataset("lifelong-synthetic", path=folder) == folder


def test_lifelong_data_module_generates_from_its_arguments():
    module = RecDataModule(dataset="lifelong-synthetic", lifelong_users=10, lifelong_history=40, lifelong_items=40,
                           lifelong_cates=4, lifelong_themes=2, lifelong_interests=2, lifelong_relevant=2,
                           lifelong_targets_per_user=2, max_users=5, max_history=40)
    assert module.num_users == 6 and len(module.splits["train"]) + len(module.splits["val"]) + len(module.splits["test"]) == 10
    batch = next(iter(module.train_dataloader()))
    assert batch["hist_item"].shape == (6, 40) and bool(batch["hist_mask"].all())
    positives = batch["label"] == 1
    assert torch.equal(batch["relevant"].sum(1) == 2, positives) and not batch["relevant"][~positives].any()


# ---------------------------------------------------------------- task construction and batches
def test_time_buckets():
    hours = np.array([0, 0.5, 1, 3, 7, 100, 1e9, -5]) * 3600
    np.testing.assert_array_equal(time_bucket(hours, 16), [1, 1, 2, 3, 4, 7, 15, 1])
    assert time_bucket(np.array([1e9]), 4)[0] == 3


def test_split_is_leave_last_out_by_time(ml_module, ml_folder):
    ratings = read_movielens(ml_folder).ratings
    vocab, seq = ml_module.vocab, ml_module.sequences
    for split in ("train", "val", "test"):
        samples = ml_module.splits[split]
        assert np.all(samples.label[0::2] == 1) and np.all(samples.label[1::2] == 0)  # positive, then its negative
        for row in range(0, len(samples), 2):
            user = int(vocab.user_raw(samples.user_row[row : row + 1] + 1)[0])
            own = ratings.filter(pl.col("user_id") == user).sort("timestamp", "item_id")
            expected_position = {"test": own.height - 1, "val": own.height - 2}.get(split)
            if expected_position is not None:
                assert samples.end[row] == expected_position
                assert vocab.item_raw(samples.target_item[row : row + 1])[0] == own["item_id"][expected_position]
            else:
                assert 1 <= samples.end[row] <= own.height - 3
            block = seq.offsets[samples.user_row[row]]
            history_times = seq.time[block : block + samples.end[row]]
            assert np.all(history_times <= samples.target_time[row])  # no future behaviour in a history
    assert len(ml_module.splits["test"]) == len(ml_module.splits["val"]) == 2 * 12


def test_negatives_are_never_in_the_users_history(ml_module):
    seq = ml_module.sequences
    for split, samples in ml_module.splits.items():
        for row in np.flatnonzero(samples.label == 0):
            user = samples.user_row[row]
            touched = seq.item[seq.offsets[user] : seq.offsets[user + 1]]
            assert samples.target_item[row] not in touched, split


def test_negative_sampling_and_train_order_are_seeded(ml_folder, ml_module):
    again = RecDataModule(data_path=str(ml_folder), max_users=12, max_history=8, batch_size=4, seed=3)
    np.testing.assert_array_equal(again.splits["train"].target_item, ml_module.splits["train"].target_item)
    first, second = next(iter(again.train_dataloader())), next(iter(ml_module.train_dataloader()))
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = RecDataModule(data_path=str(ml_folder), max_users=12, max_history=8, seed=4)
    assert not np.array_equal(other.splits["test"].target_item, ml_module.splits["test"].target_item)


def test_batch_shapes_dtypes_and_padding(ml_module):
    assert (ml_module.num_users, ml_module.num_items, ml_module.num_cates) == (13, 1683, len(GENRE_SETS) + 1)
    assert ml_module.profile_cardinalities == [3, 8, len(OCCUPATIONS) + 1]
    batch = next(iter(ml_module.val_dataloader()))
    assert set(batch) == set(BATCH_DTYPES)
    for name, dtype in BATCH_DTYPES.items():
        assert batch[name].dtype == dtype, name
        assert batch[name].shape[0] == 4
    assert batch["hist_item"].shape == batch["hist_mask"].shape == batch["relevant"].shape == (4, 8)
    assert batch["profile"].shape == (4, 3) and bool((batch["profile"] > 0).all())
    mask = batch["hist_mask"]
    for name in ("hist_item", "hist_cate", "hist_time"):
        assert bool((batch[name][~mask] == 0).all()) and bool((batch[name][mask] > 0).all()), name
    assert int(batch["hist_time"].max()) < ml_module.num_time_buckets
    assert not batch["relevant"].any()
    # left padding: once a row starts, it stays real up to the last column
    assert bool((mask.int().diff(dim=1) >= 0).all())

    short = ml_module.batch_builder("train")(np.array([0]))  # the first train sample has a one-item history
    assert ml_module.splits["train"].end[0] == 1
    assert short["hist_mask"][0].tolist() == [False] * 7 + [True]


# ---------------------------------------------------------------- vocabulary and the scoring schema
def test_vocab_round_trip(ml_module, tmp_path):
    vocab = ml_module.vocab
    loaded = RecVocab.load(vocab.save(tmp_path / "vocab"))
    assert loaded.users.equals(vocab.users) and loaded.items.equals(vocab.items)
    assert loaded.categories == vocab.categories and loaded.profile_labels == vocab.profile_labels
    assert loaded.settings == vocab.settings and loaded.profile_cardinalities == vocab.profile_cardinalities
    raw = np.array([5, 1_682, 99_999, 1])
    np.testing.assert_array_equal(loaded.item_index(raw), vocab.item_index(raw))
    assert loaded.item_index(np.array([99_999]))[0] == 0 and loaded.item_cate(np.array([0]))[0] == 0
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        RecVocab.load(tmp_path / "elsewhere")


def test_exported_test_split_encodes_to_the_test_batches(ml_module):
    frame = export_scoring_frame(ml_module, "test")
    assert frame.columns == ["user_id", "target_item", "history_items", "history_timestamps", "target_timestamp", "label"]
    assert frame.height == len(ml_module.splits["test"]) and frame["label"].to_list()[:2] == [1, 0]
    encoded = encode_scoring_frame(ml_module.vocab, frame, 8, ml_module.num_time_buckets)
    assert encoded.errors == [None] * frame.height and encoded.valid_rows == list(range(frame.height))
    expected = ml_module.batch_builder("test")(np.arange(frame.height))
    for name in BATCH_DTYPES:
        assert torch.equal(encoded.batch[name], expected[name]), name
    from_vocab = export_scoring_frame(ml_module.vocab, "test")  # rebuilt from the settings saved in the vocab
    assert from_vocab.equals(frame)


def scoring_rows(vocab: RecVocab) -> tuple[pl.DataFrame, list[str | None]]:
    known = vocab.item_raw(np.arange(1, 6)).tolist()
    rows = [
        # user_id, target_item, history_items, history_timestamps, expected error (substring) or None
        (1, known[0], "[%d, %d]" % (known[1], known[2]), "[100, 200]", None),
        (1, 99_999, str(known[1]), "100", "target_item 99999 is not in the training vocabulary; score only items seen in training or retrain"),
        (2, known[0], None, None, "history_items is empty or null"),
        (2, known[0], "[]", "[]", "history_items is empty or null"),
        (3, known[0], "[1, abc]", "[1, 2]", "history_items element 'abc' at position 1 is not an integer"),
        (3, known[0], str(known[1]), "[100, 200]", "history_timestamps has 2 values but history_items has 1"),
        (9_999, known[0], "[%d, 88888]" % known[3], None, None),  # unknown user, one unknown history item dropped
        (4, known[0], "[77777, 88888]", None, "none of the 2 history_items are in the training vocabulary (e.g. 77777)"),
        ("x", known[0], str(known[1]), None, "user_id 'x' is not an integer"),
        (5, "7.5", str(known[1]), None, "target_item '7.5' is not an integer"),
    ]
    frame = pl.DataFrame(
        {
            "user_id": [str(r[0]) for r in rows],
            "target_item": [str(r[1]) for r in rows],
            "history_items": [r[2] for r in rows],
            "history_timestamps": [r[3] for r in rows],
        },
        schema={"user_id": pl.Utf8, "target_item": pl.Utf8, "history_items": pl.Utf8, "history_timestamps": pl.Utf8},
    )
    return frame, [r[4] for r in rows]


def test_encode_reports_each_bad_row_and_keeps_alignment(ml_module):
    vocab = ml_module.vocab
    frame, expected = scoring_rows(vocab)
    encoded = encode_scoring_frame(vocab, frame, max_history=4, num_time_buckets=16)
    assert len(encoded.errors) == frame.height
    for row, (error, want) in enumerate(zip(encoded.errors, expected)):
        if want is None:
            assert error is None, (row, error)
        else:
            assert error is not None and want in error, (row, error)
    assert encoded.valid_rows == [0, 6]
    batch = encoded.batch
    assert batch["hist_item"].shape == (2, 4)
    known = vocab.item_raw(np.arange(1, 6))
    assert batch["target_item"].tolist() == vocab.item_index(np.array([known[0], known[0]])).tolist()
    # row 0: two behaviours, 100 s and 200 s before... the target time defaults to the latest history time
    assert batch["hist_item"][0].tolist() == [0, 0, *vocab.item_index(known[1:3]).tolist()]
    assert batch["hist_time"][0].tolist() == [0, 0, 1, 1]
    # row 6: the unknown user gets index 0 and an all-zero profile; the unknown history item is dropped
    assert int(batch["user"][1]) == 0 and batch["profile"][1].tolist() == [0, 0, 0]
    assert batch["hist_mask"][1].tolist() == [False, False, False, True]
    assert batch["hist_time"][1].tolist() == [0, 0, 0, 0]  # no timestamps: time bucket "unknown"


def test_encode_typed_lists_sorts_by_time_and_truncates(ml_module):
    vocab = ml_module.vocab
    items = vocab.item_raw(np.arange(1, 7)).tolist()
    hour = 3_600
    frame = pl.DataFrame({
        "user_id": [1, 2, 3],
        "target_item": [items[0], items[0], items[1]],
        "history_items": [items[1:6], [items[2], None], [items[3]]],
        "history_timestamps": [[str(h * hour) for h in (5, 1, 4, 2, 3)], ["1", "2"], ["1", "x"]],
        "target_timestamp": [6 * hour, None, 10],
        "label": [1, 0, None],
    }, schema_overrides={"history_timestamps": pl.List(pl.Utf8)})
    encoded = encode_scoring_frame(vocab, frame, max_history=3, num_time_buckets=16)
    assert encoded.errors[0] is None
    assert encoded.errors[1] == "history_items has a null at position 1"
    assert "history_timestamps element 'x' at position 1 is not an integer" in encoded.errors[2]
    batch = encoded.batch
    # ordered by timestamp (1h, 2h, 3h, 4h, 5h) and the three most recent kept: 3h, 4h, 5h before 6h
    assert batch["hist_item"][0].tolist() == vocab.item_index(np.array([items[5], items[3], items[1]])).tolist()
    assert batch["hist_time"][0].tolist() == time_bucket(np.array([3, 2, 1]) * hour, 16).tolist()
    assert batch["label"].tolist() == [1.0]


def test_encode_missing_column_is_a_file_level_error(ml_module):
    frame = pl.DataFrame({"user_id": [1], "target_item": [2]})
    with pytest.raises(ValueError, match=r"no column 'history_items'; expected user_id \(int\), target_item \(int\)"):
        encode_scoring_frame(ml_module.vocab, frame, 4, 16)


def test_encode_survives_an_object_column_and_scalar_histories(ml_module):
    vocab = ml_module.vocab
    item = int(vocab.item_raw(np.array([1]))[0])
    frame = pl.DataFrame({"user_id": [1, 1], "target_item": [item, item], "history_items": [item, item]})
    encoded = encode_scoring_frame(vocab, frame, 4, 16)
    assert encoded.valid_rows == [] and all("history_items must be a list of integers, got int" in e for e in encoded.errors)
    assert encoded.batch["hist_item"].shape == (0, 4)
    mixed = pl.DataFrame({"user_id": [1, 1], "target_item": [item, item],
                          "history_items": pl.Series([[item], "oops"], dtype=pl.Object)})
    encoded = encode_scoring_frame(vocab, mixed, 4, 16)
    assert encoded.valid_rows == [0]
    assert encoded.errors[1] == "history_items element 'oops' at position 0 is not an integer"


def test_data_module_arguments_are_checked_and_parse_for_the_cli(ml_folder):
    with pytest.raises(ValueError, match="unknown dataset 'ml'"):
        RecDataModule(dataset="ml")
    with pytest.raises(ValueError, match="num_time_buckets must be >= 2"):
        RecDataModule(data_path=str(ml_folder), num_time_buckets=1)
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_class_arguments(RecDataModule, "data")
    config = parser.parse_args(["--data.dataset", "taobao", "--data.data_path", "x.csv", "--data.max_users", "5",
                                "--data.taobao_behaviors", "[pv, buy]"])
    assert config.data.dataset == "taobao" and config.data.max_users == 5 and config.data.taobao_behaviors == ["pv", "buy"]
