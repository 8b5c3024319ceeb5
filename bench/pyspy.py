"""Where a running server's time goes: py-spy samples it, summarised for a result.

py-spy (the dev extra) samples a process's Python stacks from outside, without pausing
it (`--nonblocking`) or changing its code. Idle threads are left out, so the shares are
of the CPU the server spent. The summary keeps the functions most often on top of a
stack (self time) and most often anywhere in one (inclusive time), as shares of samples.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

RATE = 200  # samples per second
_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def start(pid: int, seconds: float, output: Path) -> subprocess.Popen:
    """py-spy recording process `pid` (all its threads) for `seconds`."""
    binary = shutil.which("py-spy")
    if binary is None:
        raise SystemExit("py-spy is not installed (the dev extra has it)")
    return subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            str(RATE),
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _name(frame: str) -> str:
    """`function (path/to/file.py:12)` -> `file.py:function`."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{Path(match['file']).name}:{match['function']}"


def summary(raw: Path, top: int = 20) -> dict:
    """{samples, self: [[function, share]...], inclusive: [...]} from py-spy's raw output."""
    own, anywhere, total = Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_name(frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if not frame.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples = int(count)
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            anywhere[frame] += samples

    def shares(counter: Counter) -> list[list]:
        return [[name, round(n / total, 3)] for name, n in counter.most_common(top)]

    return {"samples": total, "self": shares(own), "inclusive": shares(anywhere)}
