"""The plot beside `bench/results/online.json`: NDCG@10 per simulated week, one line per
variant. The project has no plotting library, so this draws into a numpy raster (lines,
axes, a 3x5 pixel font scaled up) and writes the PNG with zlib."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

WIDTH, HEIGHT, MARGIN = 900, 520, 70
SCALE = 2  # font pixels per glyph pixel
COLOURS = {
    "static": (120, 120, 120),
    "online": (31, 119, 180),
    "daily_retrain": (214, 39, 40),
    "online_knowledge": (44, 160, 44),
}
# 3x5 glyphs, rows top to bottom, "#" lit.
GLYPHS = {
    "0": ["###", "#.#", "#.#", "#.#", "###"],
    "1": [".#.", "##.", ".#.", ".#.", "###"],
    "2": ["###", "..#", "###", "#..", "###"],
    "3": ["###", "..#", ".##", "..#", "###"],
    "4": ["#.#", "#.#", "###", "..#", "..#"],
    "5": ["###", "#..", "###", "..#", "###"],
    "6": ["###", "#..", "###", "#.#", "###"],
    "7": ["###", "..#", ".#.", ".#.", ".#."],
    "8": ["###", "#.#", "###", "#.#", "###"],
    "9": ["###", "#.#", "###", "..#", "###"],
    ".": ["...", "...", "...", "...", ".#."],
    "@": ["###", "#.#", "###", "#..", "###"],
    "_": ["...", "...", "...", "...", "###"],
    " ": ["...", "...", "...", "...", "..."],
    "a": [".#.", "#.#", "###", "#.#", "#.#"],
    "c": ["###", "#..", "#..", "#..", "###"],
    "d": ["##.", "#.#", "#.#", "#.#", "##."],
    "e": ["###", "#..", "##.", "#..", "###"],
    "g": ["###", "#..", "#.#", "#.#", "###"],
    "i": ["###", ".#.", ".#.", ".#.", "###"],
    "k": ["#.#", "#.#", "##.", "#.#", "#.#"],
    "l": ["#..", "#..", "#..", "#..", "###"],
    "n": ["##.", "#.#", "#.#", "#.#", "#.#"],
    "o": ["###", "#.#", "#.#", "#.#", "###"],
    "r": ["##.", "#.#", "##.", "#.#", "#.#"],
    "s": ["###", "#..", "###", "..#", "###"],
    "t": ["###", ".#.", ".#.", ".#.", ".#."],
    "w": ["#.#", "#.#", "###", "###", "#.#"],
    "y": ["#.#", "#.#", "###", ".#.", ".#."],
    "h": ["#.#", "#.#", "###", "#.#", "#.#"],
    "m": ["#.#", "###", "###", "#.#", "#.#"],
    "p": ["###", "#.#", "###", "#..", "#.."],
    "u": ["#.#", "#.#", "#.#", "#.#", "###"],
    "v": ["#.#", "#.#", "#.#", "#.#", ".#."],
    "x": ["#.#", "#.#", ".#.", "#.#", "#.#"],
    "b": ["##.", "#.#", "##.", "#.#", "##."],
    "f": ["###", "#..", "##.", "#..", "#.."],
}


def text(image: np.ndarray, x: int, y: int, words: str, colour=(0, 0, 0)) -> None:
    """Draw `words` (lower case, digits, ". @ _") with its top left at (x, y)."""
    for char in words.lower():
        glyph = GLYPHS.get(char, GLYPHS[" "])
        for row, line in enumerate(glyph):
            for column, lit in enumerate(line):
                if lit == "#":
                    top, left = y + row * SCALE, x + column * SCALE
                    image[top : top + SCALE, left : left + SCALE] = colour
        x += 4 * SCALE


def line(image: np.ndarray, start, end, colour, width: int = 2) -> None:
    (x0, y0), (x1, y1) = start, end
    steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    for t in np.linspace(0, 1, steps):
        x, y = int(round(x0 + (x1 - x0) * t)), int(round(y0 + (y1 - y0) * t))
        image[
            max(y - width // 2, 0) : y + width - width // 2,
            max(x - width // 2, 0) : x + width - width // 2,
        ] = colour


def png(image: np.ndarray) -> bytes:
    """An RGB uint8 raster [H, W, 3] as PNG bytes."""
    height, width, _ = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def plot_weeks(variants: dict, path: Path, metric: str = "ndcg@10") -> Path:
    """One line per variant of `metric` by simulated week (`variants[v]["per_week"]`)."""
    image = np.full((HEIGHT, WIDTH, 3), 255, dtype=np.uint8)
    series = {
        name: [(row["week"], row[metric]) for row in figures["per_week"]]
        for name, figures in variants.items()
    }
    weeks = sorted({week for points in series.values() for week, _ in points})
    top = max((value for points in series.values() for _, value in points), default=0.0)
    top = max(np.ceil(top * 50) / 50, 0.02)  # round up to 0.02
    left, right, upper, lower = MARGIN, WIDTH - 20, 50, HEIGHT - MARGIN
    span = max(weeks[-1] - weeks[0], 1) if weeks else 1

    def at(week: float, value: float) -> tuple[float, float]:
        x = left + (week - (weeks[0] if weeks else 0)) / span * (right - left)
        return x, lower - value / top * (lower - upper)

    for tick in np.linspace(0, top, 5):
        _, y = at(0, tick)
        line(image, (left, y), (right, y), (225, 225, 225), 1)
        text(image, 8, int(y) - 5, f"{tick:.2f}")
    for week in weeks:
        x, _ = at(week, 0)
        text(image, int(x) - 4, lower + 8, str(week))
    line(image, (left, upper), (left, lower), (0, 0, 0), 2)
    line(image, (left, lower), (right, lower), (0, 0, 0), 2)
    text(image, left, 12, f"{metric} per simulated week")
    text(image, WIDTH // 2 - 80, HEIGHT - 28, "week after the split")
    for row, (name, points) in enumerate(series.items()):
        colour = COLOURS.get(name, (0, 0, 0))
        for (w0, v0), (w1, v1) in zip(points, points[1:], strict=False):
            line(image, at(w0, v0), at(w1, v1), colour, 3)
        legend_y = upper + 6 + row * 16
        image[legend_y : legend_y + 10, right - 250 : right - 230] = colour
        text(image, right - 222, legend_y, name, colour)
    path.write_bytes(png(image))
    return path
