"""Parsers for dataset files: RecBole atomic files, GroupLens ml-1m / ml-20m, Amazon 5-core.

Each returns a `RawData`: interactions in file order with the raw (string) ids,
and features by raw id. File order matters: it breaks timestamp ties, as in
RecBole. `streamrec.datasets` remaps ids and builds the splits.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamrec.datasets.fetch import amazon_review_files

_YEAR_IN_TITLE = re.compile(r"\s*\((\d{4})\)\s*$")


@dataclass
class RawData:
    user_ids: np.ndarray  # str, file order
    item_ids: np.ndarray  # str
    ratings: np.ndarray  # float32, NaN where the file has none
    timestamps: np.ndarray  # int64 seconds
    # Raw id -> {"title", "year", "genres"} / {"age", "gender", "occupation"}: `Item` / `User`.
    items: dict[str, dict] = field(default_factory=dict)
    users: dict[str, dict] = field(default_factory=dict)
    reviews: dict[tuple[str, str], str] = field(default_factory=dict)  # (user, item) -> text


def _raw(users: list, items: list, ratings: list, timestamps: list) -> RawData:
    return RawData(
        user_ids=np.asarray(users, dtype=str),
        item_ids=np.asarray(items, dtype=str),
        ratings=np.asarray(ratings, dtype=np.float64).astype(np.float32),
        timestamps=np.asarray(timestamps, dtype=np.float64).astype(np.int64),
    )


def _int_or_none(text: str | None) -> int | None:
    """A number, or None for the blanks and placeholders ('unknown', 'V') files hold."""
    try:
        return int(float(text or ""))
    except ValueError:
        return None


def _split_title(title: str) -> tuple[str, int | None]:
    """GroupLens titles end with the year: 'Heat (1995)' -> ('Heat', 1995)."""
    match = _YEAR_IN_TITLE.search(title)
    return (title[: match.start()], int(match.group(1))) if match else (title.strip(), None)


def _atomic_file(path: Path) -> tuple[dict[str, int], list[list[str]]]:
    """Column positions by field name (the ':type' dropped) and the rows of an atomic file."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        rows = [row for row in reader if row]
    return {column.split(":")[0]: i for i, column in enumerate(header)}, rows


def _first_of(row: list[str], columns: dict[str, int], *names: str) -> str:
    for name in names:
        if name in columns and columns[name] < len(row):
            return row[columns[name]]
    return ""


def load_atomic(folder: Path, name: str) -> RawData:
    """RecBole atomic files: `<name>.inter` and the optional `<name>.item`, `<name>.user`."""
    path = folder / f"{name}.inter"
    columns, rows = _atomic_file(path)
    missing = {"user_id", "item_id", "timestamp"} - columns.keys()
    if missing:
        raise ValueError(f"{path}: no {', '.join(sorted(missing))} column")

    def column(field_name: str) -> list[str]:
        return [row[columns[field_name]] for row in rows]

    ratings = column("rating") if "rating" in columns else [np.nan] * len(rows)
    data = _raw(column("user_id"), column("item_id"), ratings, column("timestamp"))
    if (folder / f"{name}.item").is_file():
        columns, rows = _atomic_file(folder / f"{name}.item")
        for row in rows:
            data.items[row[columns["item_id"]]] = {
                "title": _first_of(row, columns, "movie_title", "title"),
                "year": _int_or_none(_first_of(row, columns, "release_year", "year")),
                "genres": _first_of(row, columns, "class", "genre", "categories").split(),
            }
    if (folder / f"{name}.user").is_file():
        columns, rows = _atomic_file(folder / f"{name}.user")
        for row in rows:
            data.users[row[columns["user_id"]]] = {
                "age": _int_or_none(_first_of(row, columns, "age")),
                "gender": _first_of(row, columns, "gender") or None,
                "occupation": _first_of(row, columns, "occupation") or None,
            }
    return data


# Occupation codes of ml-1m's users.dat (its README).
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
]  # fmt: skip


def _grouplens_rows(path: Path):
    with open(path, encoding="latin-1") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip("\r\n").split("::")


def load_ml1m(folder: Path) -> RawData:
    """GroupLens ml-1m: ratings.dat, movies.dat, optional users.dat, '::'-separated.

    Age is the group's code as the file has it (1 = under 18, 18 = 18-24, ...).
    """
    users, items, ratings, timestamps = [], [], [], []
    for user, item, rating, timestamp in _grouplens_rows(folder / "ratings.dat"):
        users.append(user)
        items.append(item)
        ratings.append(rating)
        timestamps.append(timestamp)
    data = _raw(users, items, ratings, timestamps)
    for item_id, title, genres in _grouplens_rows(folder / "movies.dat"):
        name, year = _split_title(title)
        data.items[item_id] = {"title": name, "year": year, "genres": genres.split("|")}
    if (folder / "users.dat").is_file():
        for user_id, gender, age, occupation, _zip in _grouplens_rows(folder / "users.dat"):
            code = int(occupation)
            data.users[user_id] = {
                "age": int(age),
                "gender": gender,
                "occupation": ML1M_OCCUPATIONS[code] if code < len(ML1M_OCCUPATIONS) else None,
            }
    return data


def load_ml20m(folder: Path) -> RawData:
    """GroupLens ml-20m: ratings.csv and movies.csv, with headers."""
    with open(folder / "ratings.csv", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        rows = [row for row in reader if row]
    data = _raw(*(list(column) for column in zip(*rows, strict=True)))
    with open(folder / "movies.csv", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            name, year = _split_title(row["title"])
            genres = [] if row["genres"] == "(no genres listed)" else row["genres"].split("|")
            data.items[row["movieId"]] = {"title": name, "year": year, "genres": genres}
    return data


def _json_lines(path: Path):
    """Records of a JSON-lines file; the 2014 Amazon meta files hold Python literals instead."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                yield ast.literal_eval(line)


def _categories(record: dict) -> list[str]:
    """`category` (2018: a list) or `categories` (2014: a list of paths), flattened, unique."""
    found = record.get("category") or record.get("categories") or []
    flat = [c for entry in found for c in (entry if isinstance(entry, list) else [entry])]
    return list(dict.fromkeys(flat))


def load_amazon(folder: Path) -> RawData:
    """Amazon 5-core reviews (reviewerID, asin, overall, unixReviewTime, reviewText, summary),
    with titles and categories from meta_* files when present."""
    users, items, ratings, timestamps, reviews = [], [], [], [], {}
    for path in amazon_review_files(folder):
        for record in _json_lines(path):
            user, item = record["reviewerID"], record["asin"]
            users.append(user)
            items.append(item)
            ratings.append(record.get("overall", np.nan))
            timestamps.append(record["unixReviewTime"])
            text = record.get("reviewText") or record.get("summary")
            if text:
                reviews[(user, item)] = text
    data = _raw(users, items, ratings, timestamps)
    data.reviews = reviews
    reviewed = set(items)  # meta files cover every product of a category: keep the reviewed
    for path in sorted(folder.glob("meta_*")):
        for record in _json_lines(path):
            if record.get("asin") in reviewed:
                data.items[record["asin"]] = {
                    "title": record.get("title", ""),
                    "year": None,
                    "genres": _categories(record),
                }
    return data
