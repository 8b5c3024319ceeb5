"""bench/online.py's figures from recorded ranks: per-week and cold-item splits, the
bootstrap over users, the event -> first version join, and the plot's PNG."""

import math
import struct
import zlib

import numpy as np
import pytest

from bench.online_plot import plot_weeks
from bench.online_report import Asked, bootstrap_gain, first_version_times, variant_figures


def asked(ranks: dict[str, list[float]], users, weeks, cold) -> Asked:
    return Asked(
        users=np.asarray(users),
        weeks=np.asarray(weeks),
        cold=np.asarray(cold, dtype=bool),
        ranks={name: np.asarray(values, dtype=float) for name, values in ranks.items()},
        cold_start={name: np.zeros(len(users), dtype=bool) for name in ranks},
    )


def test_figures_split_by_week_and_cold_items():
    record = asked(
        {"static": [1, math.inf, 3, math.inf]},
        users=[1, 1, 2, 2],
        weeks=[0, 0, 1, 1],
        cold=[False, False, False, True],
    )
    figures = variant_figures(record, "static")
    gain_at_3 = 1 / math.log2(4)
    assert figures["ndcg@10"] == pytest.approx((1 + gain_at_3) / 4)
    assert figures["hr@10"] == 0.5
    assert figures["cold_hr@10"] == 0.0 and figures["cold_hits"] == 0
    assert [week["events"] for week in figures["per_week"]] == [2, 2]
    assert figures["per_week"][1]["ndcg@10"] == pytest.approx(gain_at_3 / 2)


def test_bootstrap_interval_is_above_zero_only_for_a_consistent_gain():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(200), 5)
    static = rng.choice([1.0, math.inf], size=len(users), p=[0.1, 0.9])
    better = np.where(rng.random(len(users)) < 0.2, 1.0, static)  # strictly more hits
    same = rng.permutation(static)  # the same hit rate, shuffled over users
    record = asked({"static": static, "better": better, "same": same}, users, users * 0, users * 0)
    gain = bootstrap_gain(record, "better", samples=500)
    assert gain["ndcg@10_gain"] > 0 and gain["ci95"][0] > 0
    assert gain["ci95"][0] <= gain["ndcg@10_gain"] <= gain["ci95"][1]
    assert gain["ci95_difference"][0] > 0 and gain["users"] == 200
    neutral = bootstrap_gain(record, "same", samples=500)
    assert neutral["ci95"][0] < 0 < neutral["ci95"][1]


def test_an_example_reaches_the_first_version_whose_offsets_pass_it():
    versions = [(1000, {0: 5, 1: 2}), (2000, {0: 5, 1: 9}), (3000, {0: 12, 1: 9})]
    positions = [(0, 4), (0, 5), (1, 2), (1, 8), (0, 12), (2, 0)]
    assert first_version_times(positions, versions) == [1000, 3000, 2000, 2000, None, None]


def test_the_plot_is_a_png_of_the_requested_size(tmp_path):
    variants = {
        name: {"per_week": [{"week": w, "ndcg@10": 0.01 * (w + i)} for w in range(4)]}
        for i, name in enumerate(("static", "online"))
    }
    data = plot_weeks(variants, tmp_path / "plot.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    pixels = zlib.decompress(data[idat + 4 : idat + 4 + length])
    assert len(pixels) == height * (1 + 3 * width)
    raster = np.frombuffer(pixels, dtype=np.uint8).reshape(height, 1 + 3 * width)[:, 1:]
    online_blue = np.array([31, 119, 180], dtype=np.uint8)
    assert (raster.reshape(height, width, 3) == online_blue).all(axis=2).sum() > 100
