"""A sampling profiler for the stream worker, on when `streams.profile_path` is set.

The worker's time is spread over its event loop and the executor threads that
talk to ClickHouse, so a profiler of the main thread alone (cProfile) misses
half of it, and a tracing one slows per-event code out of proportion. This one
looks at every thread's stack every few milliseconds and counts, per function,
the samples where it was running (self) and on the stack (total). The summary
is rewritten every few seconds, so a worker stopped any way leaves one.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from pathlib import Path

_IDLE = ("select", "poll", "epoll", "wait", "_worker", "sleep", "acquire")


def _where(frame) -> str:
    code = frame.f_code
    parts = Path(code.co_filename).parts
    return f"{'/'.join(parts[-2:])}:{code.co_name}"


class SamplingProfiler:
    def __init__(self, path: Path, interval_s: float = 0.005, write_every_s: float = 5.0):
        self.path, self.interval_s, self.write_every_s = Path(path), interval_s, write_every_s
        self.self_counts: Counter[str] = Counter()
        self.total_counts: Counter[str] = Counter()
        self.samples = 0
        self._me = None

    def start(self) -> None:
        thread = threading.Thread(target=self._run, name="sampling-profiler", daemon=True)
        thread.start()
        self._me = thread.ident

    def _sample(self) -> None:
        for ident, frame in sys._current_frames().items():
            if ident == self._me:
                continue
            self.samples += 1
            leaf = _where(frame)
            self.self_counts[leaf] += 1
            if leaf.endswith(_IDLE):
                continue
            seen = set()
            while frame is not None:
                where = _where(frame)
                if where not in seen:
                    seen.add(where)
                    self.total_counts[where] += 1
                frame = frame.f_back

    def _run(self) -> None:
        written = time.monotonic()
        while True:
            time.sleep(self.interval_s)
            self._sample()
            if time.monotonic() - written > self.write_every_s:
                self.write()
                written = time.monotonic()

    def write(self, top: int = 40) -> None:
        """The busiest functions, idle waits (a thread blocked in select/wait) apart."""
        busy = {k: v for k, v in self.self_counts.items() if not k.endswith(_IDLE)}
        busy_samples = sum(busy.values()) or 1
        lines = [f"samples {self.samples}, busy {busy_samples} (every thread, idle waits apart)"]
        lines.append("\nself (share of busy samples):")
        for where, count in Counter(busy).most_common(top):
            lines.append(f"{100 * count / busy_samples:6.2f}%  {where}")
        lines.append("\ntotal (share of busy samples with it on the stack):")
        for where, count in self.total_counts.most_common(top * 2):
            lines.append(f"{100 * count / busy_samples:6.2f}%  {where}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(lines) + "\n")


def start_profiling(path: str) -> None:
    """Sample this process from now on when `path` (the summary's file) is set."""
    if path:
        SamplingProfiler(Path(path)).start()
