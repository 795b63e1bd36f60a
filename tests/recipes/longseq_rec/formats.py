"""Recommendation data in the exact file formats, shared by the longseq_rec tests: a synthetic ML-100K written as
RecBole's atomic files, as the GroupLens files and as the GroupLens zip, and rows of a Taobao UserBehavior CSV.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from recipes.longseq_rec.readers import GROUPLENS_GENRES

BATCH_DTYPES = {
    "user": torch.long, "profile": torch.long, "target_item": torch.long, "target_cate": torch.long,
    "hist_item": torch.long, "hist_cate": torch.long, "hist_time": torch.long, "hist_mask": torch.bool,
    "label": torch.float32, "relevant": torch.bool,
}
OCCUPATIONS = ("student", "engineer", "writer", "other", "artist")
GENRE_SETS = (["Animation", "Children's", "Comedy"], ["Drama"], ["Action", "Sci-Fi"], ["unknown"], ["Film-Noir", "Thriller"])


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
