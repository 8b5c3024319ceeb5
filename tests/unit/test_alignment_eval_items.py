"""The items an alignment evaluation regenerates: what it needs, not the whole catalog."""

from __future__ import annotations

import pytest

from streamrec.datasets import load_dataset
from workers.alignment.data import sample_rows
from workers.alignment.job import evaluation_items, popular_items
from workers.recommender_training import protocol_data


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("ml-100k")


def test_evaluation_items_are_the_evaluated_targets_and_last_items_plus_popular(dataset):
    test = protocol_data(dataset).test
    rows = test.subset(sample_rows(len(test), 20, 3))
    last = {int(h[n - 1]) for h, n in zip(rows.histories, rows.lengths, strict=True)}
    wanted = set(rows.targets.tolist()) | last

    items = evaluation_items(dataset, test, 20, 3, "last_item", 1, popular=0)
    assert set(items) == wanted
    assert len(items) <= 40 < dataset.num_items

    with_popular = evaluation_items(dataset, test, 20, 3, "last_item", 1, popular=50)
    assert set(with_popular) == wanted | set(popular_items(dataset, 50))

    # k_items re-samples the last k history items: those are regenerated too.
    three = evaluation_items(dataset, test, 20, 3, "k_items", 3, popular=0)
    earlier = {
        int(h[position])
        for h, n in zip(rows.histories, rows.lengths, strict=True)
        for position in range(max(0, n - 3), n)
    }
    assert wanted | earlier == set(three)
    assert set(items) < set(three)


def test_popular_items_are_the_most_frequent_training_targets(dataset):
    top = popular_items(dataset, 10)
    counts = {}
    for target in dataset.splits["train"].targets.tolist():
        counts[target] = counts.get(target, 0) + 1
    tenth = sorted(counts.values(), reverse=True)[9]
    assert len(top) == 10 and all(counts[item] >= tenth for item in top)
    assert len(popular_items(dataset, 0)) == dataset.num_items
