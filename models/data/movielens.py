"""MovieLens loaders into the data contract.

Two layouts: ml-latest-small / ml-25m / ml-32m (``ratings.csv``, ``movies.csv``, optional ``tags.csv``) and the
older ml-100k (``u.data``, ``u.item``, ``u.user`` with demographics). Item text is title + genres (+ tags, on request);
``created_at`` is the release date (year) or, when absent, the item's first rating.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from models.data import columns as C
from models.data.contract import Dataset, validate_dataset

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
NO_GENRE = "(no genres listed)"
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def detect_layout(folder: Path) -> str:
    """'latest' for ratings.csv + movies.csv, '100k' for u.data + u.item; raises naming what is missing."""
    folder = Path(folder)
    if (folder / "ratings.csv").exists() and (folder / "movies.csv").exists():
        return "latest"
    if (folder / "u.data").exists() and (folder / "u.item").exists():
        return "100k"
    raise FileNotFoundError(f"{folder}: not a MovieLens folder (expected ratings.csv + movies.csv, or u.data + u.item)")


def load_movielens(folder: Path, now: pd.Timestamp | None = None, include_tags: bool = False) -> Dataset:
    """Load either MovieLens layout from ``folder`` and validate it.

    ``include_tags`` adds users' tags to the item text. Off by default: tags carry no time in the item text, so
    tags written during a test period would leak into offline evaluation.
    """
    folder = Path(folder)
    layout = detect_layout(folder)
    return _load_latest(folder, now, include_tags) if layout == "latest" else _load_100k(folder, now)


def age_band(age: pd.Series) -> pd.Series:
    """Ages → the bands MovieLens 1M uses, as text."""
    bins = [0, 18, 25, 35, 45, 50, 56, 200]
    labels = ["under_18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+"]
    return pd.cut(age, bins=bins, labels=labels, right=False).astype(object)


def _release_from_title(titles: pd.Series) -> pd.Series:
    years = titles.str.extract(_YEAR, expand=False)
    return pd.to_datetime(years, format="%Y", utc=True, errors="coerce")


def _created_at(release: pd.Series, item_ids: pd.Series, interactions: pd.DataFrame) -> pd.Series:
    """Release date where known, else the first interaction with the item, else the dataset's first event."""
    first_seen = interactions.groupby(C.ITEM_ID)[C.TIMESTAMP].min()
    fallback = item_ids.map(first_seen)
    created = release.where(release.notna(), fallback)
    earliest = interactions[C.TIMESTAMP].min()
    return created.fillna(earliest)


def _ratings(users: pd.Series, items: pd.Series, seconds: pd.Series, ratings: pd.Series) -> pd.DataFrame:
    """MovieLens ratings as contract interactions (event type ``rating``)."""
    return pd.DataFrame(
        {
            C.USER_ID: users,
            C.ITEM_ID: items,
            C.TIMESTAMP: pd.to_datetime(seconds, unit="s", utc=True),
            C.EVENT_TYPE: C.RATED,
            C.RATING: ratings.astype(float),
        }
    )


def _item_text(genres: pd.Series, tags: pd.Series | None) -> pd.Series:
    description = "Genres: " + genres.str.replace("|", ", ", regex=False)
    if tags is not None:
        description = description + np.where(tags.fillna("") != "", ". Tags: " + tags.fillna(""), "")
    return description


def _load_latest(folder: Path, now: pd.Timestamp | None, include_tags: bool) -> Dataset:
    ratings = pd.read_csv(folder / "ratings.csv", dtype={"userId": str, "movieId": str})
    movies = pd.read_csv(folder / "movies.csv", dtype={"movieId": str})
    interactions = _ratings(ratings["userId"], ratings["movieId"], ratings["timestamp"], ratings["rating"])
    tags = None
    if include_tags and (folder / "tags.csv").exists():
        raw_tags = pd.read_csv(folder / "tags.csv", dtype={"movieId": str})
        raw_tags["tag"] = raw_tags["tag"].astype(str).str.strip().str.lower()
        per_movie = raw_tags.drop_duplicates(["movieId", "tag"]).groupby("movieId")["tag"].agg(", ".join)
        tags = movies["movieId"].map(per_movie)
    genres = movies["genres"].fillna(NO_GENRE)
    items = pd.DataFrame(
        {
            C.ITEM_ID: movies["movieId"],
            C.TITLE: movies["title"],
            C.DESCRIPTION: _item_text(genres, tags),
            C.CATEGORY: genres.str.split("|").str[0],
            C.CREATED_AT: _created_at(_release_from_title(movies["title"]), movies["movieId"], interactions),
            C.TAGS: genres.replace(NO_GENRE, ""),
        }
    )
    sources = {"items": str(folder / "movies.csv"), "interactions": str(folder / "ratings.csv")}
    return validate_dataset(folder.name, items, interactions, users=None, sources=sources, now=now)


def _load_100k(folder: Path, now: pd.Timestamp | None) -> Dataset:
    data = pd.read_csv(
        folder / "u.data",
        sep="\t",
        header=None,
        names=["user", "item", "rating", "ts"],
        dtype={"user": str, "item": str},
    )
    interactions = _ratings(data["user"], data["item"], data["ts"], data["rating"])
    item_columns = ["item", "title", "release", "video_release", "url", *ML100K_GENRES]
    raw_items = pd.read_csv(
        folder / "u.item", sep="|", header=None, names=item_columns, encoding="latin-1", dtype={"item": str}
    )
    flags = raw_items[list(ML100K_GENRES)].to_numpy(dtype=bool)
    genre_lists = ["|".join(g for g, on in zip(ML100K_GENRES, row, strict=True) if on) or NO_GENRE for row in flags]
    genres = pd.Series(genre_lists, index=raw_items.index)
    release = pd.to_datetime(raw_items["release"], format="%d-%b-%Y", utc=True, errors="coerce")
    release = release.where(release.notna(), _release_from_title(raw_items["title"].fillna("")))
    items = pd.DataFrame(
        {
            C.ITEM_ID: raw_items["item"],
            C.TITLE: raw_items["title"].fillna("unknown"),
            C.DESCRIPTION: _item_text(genres, None),
            C.CATEGORY: genres.str.split("|").str[0],
            C.CREATED_AT: _created_at(release, raw_items["item"], interactions),
            C.TAGS: genres.replace(NO_GENRE, ""),
        }
    )
    users = None
    sources = {"items": str(folder / "u.item"), "interactions": str(folder / "u.data")}
    if (folder / "u.user").exists():
        raw_users = pd.read_csv(
            folder / "u.user", sep="|", header=None, names=["user", "age", "gender", "occupation", "zip"],
            dtype={"user": str, "zip": str},
        )  # fmt: skip
        users = pd.DataFrame(
            {
                C.USER_ID: raw_users["user"],
                C.AGE_BAND: age_band(raw_users["age"]),
                C.GENDER: raw_users["gender"],
                C.OCCUPATION: raw_users["occupation"],
            }
        )
        sources["users"] = str(folder / "u.user")
    return validate_dataset(folder.name, items, interactions, users=users, sources=sources, now=now)
