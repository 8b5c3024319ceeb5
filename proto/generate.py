"""Generate the Python stubs of the wire API into streamrec/v1/.

The stubs are committed, so installing streamrec needs no protoc. Run this
after editing a .proto; `--check` (run by the tests) fails when the committed
stubs no longer match the sources.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent
PACKAGE_DIR = Path("streamrec") / "v1"


def _normalise(text: str) -> list[str]:
    """Drop the generator's version stamp so a newer grpcio-tools is not 'stale'."""
    skip = ("# Protobuf Python Version:", "_runtime_version.", "GRPC_GENERATED_VERSION =")
    lines = []
    for line in text.splitlines():
        if line.lstrip().startswith(skip):
            continue
        # Version numbers inside the runtime version check call span lines.
        if line.strip().rstrip(",").replace("'", "").isdigit():
            continue
        lines.append(line)
    return lines


def generate(out_dir: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc

    sources = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto")
    )
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_dir / PACKAGE_DIR).glob("*_pb2*.py*"))


def check() -> list[str]:
    """Names of the committed stubs that differ from freshly generated ones."""
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = {p.name for p in (REPO_ROOT / PACKAGE_DIR).glob("*_pb2*.py*")}
        for path in fresh:
            target = REPO_ROOT / PACKAGE_DIR / path.name
            if not target.exists():
                stale.append(f"{path.name} (missing)")
                continue
            committed.discard(path.name)
            if _normalise(path.read_text()) != _normalise(target.read_text()):
                diff = difflib.unified_diff(
                    _normalise(target.read_text()), _normalise(path.read_text()), lineterm="", n=0
                )
                stale.append(f"{path.name}\n" + "\n".join(list(diff)[:20]))
        stale.extend(f"{name} (no .proto source)" for name in sorted(committed))
    return stale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if the committed stubs are stale"
    )
    if parser.parse_args().check:
        stale = check()
        if stale:
            print("stale stubs, run `python proto/generate.py`:\n" + "\n".join(stale))
            sys.exit(1)
        print("stubs up to date")
        return
    for path in generate(REPO_ROOT):
        print(path.relative_to(REPO_ROOT))


if __name__ == "__main__":
    main()
