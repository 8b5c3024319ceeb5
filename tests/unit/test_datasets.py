"""Datasets: ml-100k from the recbole wheel, RecBole's sequential splits, the other file formats."""

import gzip
import hashlib
import json
import shutil

import numpy as np
import pytest

from streamrec.datasets import fetch as fetch_module
from streamrec.datasets import first_interactions, load_dataset
from streamrec.datasets.fetch import fetch_dataset
from streamrec.settings import AssetSettings, Settings

# sha256 of RecBole 1.2.1's own splits of ml-100k (SASRec with its default config; one line per
# example, in RecBole's row order: "user<TAB>target<TAB>history items, space-separated", raw ids).
RECBOLE_SPLIT_SHA256 = {
    "train": "c7d01773f9f28a07b3167535316b3086dce27b8a4b056dd6e7acd6419468276b",
    "valid": "d93cb86181ccc21675f8fa530437a58588561ed7367838fa922795942385a505",
    "test": "b4b3e9078858ae086d68c722a338709ce90d23f841642d4447f66ced57c09ccc",
}


@pytest.fixture(scope="session")
def ml100k():
    return load_dataset("ml-100k", Settings())


@pytest.fixture
def private_cache(tmp_path):
    """Settings with an empty cache that already holds the recbole wheel (no download)."""
    shared = Settings()
    fetch_dataset("ml-100k", shared)
    (tmp_path / "wheels").mkdir()
    for wheel in (shared.cache_dir / "wheels").glob("recbole-*.whl"):
        shutil.copy(wheel, tmp_path / "wheels")
    return Settings(cache_dir=tmp_path)


def _dataset_folder(cache, name: str, files: dict[str, str]):
    """The folder where the cache looks for dataset `name`, with these files written in it."""
    folder = cache / "datasets" / name
    folder.mkdir(parents=True)
    for file, text in files.items():
        (folder / file).write_text(text)
    return folder


def _raw_rows(dataset, part):
    split = dataset.splits[part]
    raw = dataset.item_raw_ids
    return [
        (dataset.user_raw_ids[u], raw[t], [raw[i] for i in history[:length]])
        for u, t, history, length in zip(
            split.users.tolist(),
            split.targets.tolist(),
            split.histories.tolist(),
            split.lengths.tolist(),
            strict=True,
        )
    ]


def test_ml100k_sizes(ml100k):
    assert (ml100k.num_users, ml100k.num_items, ml100k.num_interactions) == (943, 1682, 100_000)


def test_interactions_are_in_time_order_with_ties_in_file_order(ml100k):
    assert np.all(np.diff(ml100k.timestamps) >= 0)
    folder = fetch_dataset("ml-100k", Settings())
    lines = (folder / "ml-100k.inter").read_text().splitlines()[1:]
    rows = sorted((line.split("\t") for line in lines), key=lambda row: int(row[3]))  # stable
    records = ml100k.interaction_records()
    assert [(r.user_id, r.item_id, r.rating, r.timestamp) for r in records] == [
        (int(u), int(i), float(r), int(t)) for u, i, r, t in rows
    ]


def test_inner_ids_follow_recbole(ml100k):
    # 1..N in order of first appearance in the file (its first rows: 196 242, 186 302); 0 pads.
    assert ml100k.item_raw_ids[:3] == ["[PAD]", "242", "302"]
    assert ml100k.user_raw_ids[:3] == ["[PAD]", "196", "186"]
    assert len(ml100k.item_raw_ids) == ml100k.num_items + 1
    assert sorted(ml100k.items) == list(range(1, 1683))
    assert all(ml100k.item_raw_ids[inner] == raw for raw, inner in ml100k.item_inner_ids.items())
    assert all(ml100k.users[inner].raw_id == raw for raw, inner in ml100k.user_inner_ids.items())


def test_split_sizes_follow_recbole(ml100k):
    splits = ml100k.splits
    assert len(splits["test"]) == len(splits["valid"]) == 943
    # Every interaction after a user's first is an example; two per user are held out.
    assert len(splits["train"]) == 100_000 - 943 - 2 * 943 == 97_171
    assert splits["train"].lengths.min() == 1 and splits["train"].lengths.max() == 50


def test_splits_are_recboles_example_for_example(ml100k):
    for part, expected in RECBOLE_SPLIT_SHA256.items():
        text = "".join(f"{u}\t{t}\t{' '.join(h)}\n" for u, t, h in _raw_rows(ml100k, part))
        assert hashlib.sha256(text.encode()).hexdigest() == expected, part


def test_time_ties_are_broken_as_recbole_breaks_them(ml100k):
    # User 167 rated 606 at 892738452 and 530 a second later, but 606 comes later in the file:
    # RecBole's float32 timestamps merge the two seconds, so 606 is the test target.
    test = dict((user, (target, history)) for user, target, history in _raw_rows(ml100k, "test"))
    target, history = test["167"]
    assert target == "606" and history[-1] == "530"


def test_histories_are_left_aligned_and_chain_into_valid_and_test(ml100k):
    valid, test = ml100k.splits["valid"], ml100k.splits["test"]
    for split in ml100k.splits.values():
        padding = np.arange(split.histories.shape[1]) >= split.lengths[:, None]
        assert np.all(split.histories[padding] == 0) and np.all(split.histories[~padding] > 0)
    by_user = np.argsort(valid.users)
    assert np.array_equal(np.sort(test.users), valid.users[by_user])
    test_rows = np.argsort(test.users)
    last_of_test = test.histories[test_rows, test.lengths[test_rows] - 1]
    assert np.array_equal(last_of_test, valid.targets[by_user])


def test_first_interactions_is_the_dataset_as_it_stood_then(ml100k):
    count = 30_000
    prefix = first_interactions(ml100k, count)
    seen_items = {ml100k.item_raw_ids[i] for i in ml100k.item_ids[:count].tolist()}
    assert set(prefix.item_raw_ids[1:]) == seen_items < set(ml100k.item_raw_ids[1:])
    assert prefix.num_interactions == count
    # Each user's items, in time order, are their first interactions of the dataset's.
    whole: dict[str, list[str]] = {}
    pairs = zip(ml100k.user_ids[:count].tolist(), ml100k.item_ids[:count].tolist(), strict=True)
    for user, item in pairs:
        whole.setdefault(ml100k.user_raw_ids[user], []).append(ml100k.item_raw_ids[item])
    # Every interaction after a user's first is an example, the user's last one is test.
    targets: dict[str, list[str]] = {}
    for part in ("train", "valid", "test"):
        for user, target, _ in _raw_rows(prefix, part):
            targets.setdefault(user, []).append(target)
    for user, items in whole.items():
        assert sorted(targets.get(user, [])) == sorted(items[1:])
    for user, target, history in _raw_rows(prefix, "test"):
        assert [*history, target] == whole[user][-len(history) - 1 :]
    item = prefix.items[prefix.item_inner_ids["50"]]
    assert item.inner_id == prefix.item_inner_ids["50"] and item.title.startswith("Star Wars")


def test_item_and_user_features_are_parsed(ml100k):
    toy_story = ml100k.items[ml100k.item_inner_ids["1"]]
    assert (toy_story.title, toy_story.year) == ("Toy Story", 1995)
    assert toy_story.genres == ["Animation", "Children's", "Comedy"]
    assert toy_story.external_id == 1
    assert ml100k.items[ml100k.item_inner_ids["543"]].title == "Misérables, Les"
    # 'unkonwn' and 'V' are in the file as years: no year rather than a parse error.
    assert ml100k.items[ml100k.item_inner_ids["267"]].year is None
    assert ml100k.items[ml100k.item_inner_ids["1412"]].year is None
    user = ml100k.users[ml100k.user_inner_ids["1"]]
    assert (user.age, user.gender, user.occupation) == (24, "M", "technician")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match="known datasets: ml-100k, ml-1m, ml-20m, amazon"):
        fetch_dataset("netflix", Settings())


def test_a_dataset_to_bring_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="ratings.dat") as error:
        fetch_dataset("ml-1m", Settings(cache_dir=tmp_path))
    assert str(tmp_path / "datasets" / "ml-1m") in str(error.value)


def test_a_verified_fetch_is_not_repeated(private_cache, monkeypatch):
    folder = fetch_dataset("ml-100k", private_cache)
    marker = json.loads((folder / ".verified.json").read_text())
    assert marker["files"]["ml-100k.inter"]["lines"] == 100_000
    assert marker["files"]["ml-100k.user"]["sha256"]

    def no_download(*args):
        raise AssertionError("fetched again")

    monkeypatch.setattr(fetch_module, "download_wheel", no_download)
    assert fetch_dataset("ml-100k", private_cache) == folder


def _truncate(path):
    path.write_bytes(path.read_bytes()[:1000])


def _alter_keeping_the_size(path):
    path.write_bytes(path.read_bytes().replace(b"\t3\t", b"\t4\t", 1))


def _delete(path):
    path.unlink()


@pytest.mark.parametrize("damage", [_truncate, _alter_keeping_the_size, _delete])
def test_a_damaged_fetch_is_detected_and_fetched_again(private_cache, damage):
    folder = fetch_dataset("ml-100k", private_cache)
    expected = (folder / "ml-100k.inter").read_bytes()
    damage(folder / "ml-100k.inter")
    assert fetch_dataset("ml-100k", private_cache) == folder
    assert (folder / "ml-100k.inter").read_bytes() == expected


def test_a_fetch_without_its_marker_is_fetched_again(private_cache):
    folder = fetch_dataset("ml-100k", private_cache)
    (folder / ".verified.json").unlink()
    (folder / "ml-100k.item").write_text("half")
    fetch_dataset("ml-100k", private_cache)
    assert len((folder / "ml-100k.item").read_text().splitlines()) == 1683


def _write_ml1m(folder):
    folder.mkdir(parents=True)
    # User 1: three ratings, two in the same second (file order decides); user 2: two; user 3: one.
    (folder / "ratings.dat").write_text(
        "1::10::5::978300760\n1::30::4::978300790\n1::20::3::978300760\n"
        "2::10::4::978300700\n2::30::2::978300800\n3::20::1::978300500\n"
    )
    (folder / "movies.dat").write_bytes(
        "10::Heat (1995)::Action|Crime\n20::Misérables, Les (1995)::Drama\n"
        "30::Untitled::Comedy\n".encode("latin-1")
    )
    (folder / "users.dat").write_text(
        "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::0::55117\n"
    )


def test_ml1m_in_grouplens_format(tmp_path):
    _write_ml1m(tmp_path / "datasets" / "ml-1m")
    data = load_dataset("ml-1m", Settings(cache_dir=tmp_path))
    assert (data.num_users, data.num_items, data.num_interactions) == (3, 3, 6)
    heat = data.items[data.item_inner_ids["10"]]
    assert (heat.title, heat.year, heat.genres) == ("Heat", 1995, ["Action", "Crime"])
    assert data.items[data.item_inner_ids["20"]].title == "Misérables, Les"
    assert data.items[data.item_inner_ids["30"]].year is None
    user = data.users[data.user_inner_ids["1"]]
    assert (user.age, user.gender, user.occupation) == (1, "F", "K-12 student")
    assert [(r.user_id, r.item_id) for r in data.interaction_records()] == [
        (3, 20), (2, 10), (1, 10), (1, 20), (1, 30), (2, 30),
    ]  # fmt: skip
    # RecBole's leave-one-out: user 1's 2 examples give train + test, user 2's 1 gives train.
    assert _raw_rows(data, "train") == [("1", "20", ["10"]), ("2", "30", ["10"])]
    assert _raw_rows(data, "valid") == []
    assert _raw_rows(data, "test") == [("1", "30", ["10", "20"])]


def test_the_history_window_is_max_seq_length(tmp_path):
    _dataset_folder(
        tmp_path,
        "ml-1m",
        {
            "ratings.dat": "".join(f"1::{item}::5::{1000 + item}\n" for item in range(1, 8)),
            "movies.dat": "".join(f"{i}::M{i} (2000)::Drama\n" for i in range(1, 8)),
        },
    )
    data = load_dataset("ml-1m", Settings(cache_dir=tmp_path), max_seq_length=3)
    assert _raw_rows(data, "test") == [("1", "7", ["4", "5", "6"])]
    assert _raw_rows(data, "valid") == [("1", "6", ["3", "4", "5"])]
    assert data.splits["train"].histories.shape == (4, 3)


def test_a_folder_named_in_the_settings(tmp_path):
    _write_ml1m(tmp_path / "elsewhere")
    assets = AssetSettings(dataset_paths={"ml-1m": str(tmp_path / "elsewhere")})
    data = load_dataset("ml-1m", Settings(cache_dir=tmp_path / "cache", assets=assets))
    assert data.num_interactions == 6


def test_ml20m_csv_files(tmp_path):
    _dataset_folder(
        tmp_path,
        "ml-20m",
        {
            "ratings.csv": (
                "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n"
            ),
            "movies.csv": (
                "movieId,title,genres\n2,Jumanji (1995),Adventure|Children\n"
                '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995) ",'
                "(no genres listed)\n"
            ),
        },
    )
    data = load_dataset("ml-20m", Settings(cache_dir=tmp_path))
    city = data.items[data.item_inner_ids["29"]]
    assert city.title.startswith("City of Lost Children, The") and city.year == 1995
    assert city.genres == []
    assert [r.rating for r in data.interaction_records()] == [4.0, 3.5]  # time order


def test_recbole_atomic_files_under_any_name(tmp_path):
    _dataset_folder(
        tmp_path,
        "my-shop",
        {
            "my-shop.inter": (
                "user_id:token\titem_id:token\ttimestamp:float\nu1\tx\t5\nu1\ty\t6\nu2\tx\t4\n"
            ),
            "my-shop.item": (
                "item_id:token\ttitle:token_seq\tcategories:token_seq\nx\tA Lamp\tHome Lighting\n"
            ),
        },
    )
    data = load_dataset("my-shop", Settings(cache_dir=tmp_path))
    lamp = data.items[data.item_inner_ids["x"]]
    assert (lamp.title, lamp.genres, lamp.external_id) == ("A Lamp", ["Home", "Lighting"], 1)
    assert np.isnan(data.ratings).all()
    assert data.users[data.user_inner_ids["u2"]].age is None


def test_amazon_5core_reviews_with_meta(tmp_path):
    folder = _dataset_folder(tmp_path, "amazon-books", {})
    reviews = [
        {"reviewerID": "A1", "asin": "B01", "overall": 5.0, "unixReviewTime": 100,
         "reviewText": "great", "summary": "Five stars"},
        {"reviewerID": "A1", "asin": "B02", "overall": 2.0, "unixReviewTime": 200,
         "summary": "meh"},
        {"reviewerID": "A2", "asin": "B01", "overall": 4.0, "unixReviewTime": 150},
    ]  # fmt: skip
    with gzip.open(folder / "Books_5.json.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(review) for review in reviews))
    meta_2018 = {"asin": "B01", "title": "A Book", "category": ["Books", "Fiction"]}
    meta_2014 = "{'asin': 'B02', 'title': 'Another', 'categories': [['Books', 'Poetry']]}"
    unreviewed = {"asin": "B99", "title": "Never reviewed"}
    (folder / "meta_Books.json").write_text(
        "\n".join([json.dumps(meta_2018), meta_2014, json.dumps(unreviewed)])
    )
    data = load_dataset("amazon-books", Settings(cache_dir=tmp_path))
    assert (data.num_users, data.num_items, data.num_interactions) == (2, 2, 3)
    book = data.items[data.item_inner_ids["B01"]]
    assert (book.title, book.genres) == ("A Book", ["Books", "Fiction"])
    assert data.items[data.item_inner_ids["B02"]].genres == ["Books", "Poetry"]
    assert book.external_id == book.inner_id  # non-numeric ids go on the wire as inner ids
    assert sorted(data.reviews.values()) == ["great", "meh"]
    assert data.timestamps.tolist() == [100, 150, 200]
