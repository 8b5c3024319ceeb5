"""What bench/gpu.sh needs, checked before it spends GPU time: nothing is downloaded there.

    python -m bench.gpu_check [--cpu]

Prints one line per need and exits 1 when one is missing: torch (with CUDA unless
`--cpu`), the default LLM and text encoder folders (`streamrec assets fetch`, or the
asset paths), MovieLens-100K (`streamrec data fetch ml-100k`), and whether faiss has GPU
support (optional: the faiss part then measures the CPU only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamrec.assets import ENCODER_NAME, LLM_NAME
from streamrec.datasets.fetch import dataset_folder, find_layout
from streamrec.settings import get_settings


def needs(cpu: bool) -> list[tuple[str, bool, str]]:
    """(what, present, detail) per need; the optional faiss-gpu line counts as present."""
    import faiss
    import torch

    settings = get_settings()
    models = settings.cache_dir / "models"
    llm = Path(settings.assets.llm_path or models / LLM_NAME).expanduser()
    encoder = Path(settings.assets.text_encoder_path or models / ENCODER_NAME).expanduser()
    dataset = dataset_folder("ml-100k", settings)
    cuda = torch.cuda.is_available()
    gpu_faiss = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    return [
        ("torch", True, f"{torch.__version__}, CUDA {torch.version.cuda}"),
        ("a CUDA device", cpu or cuda, torch.cuda.get_device_name() if cuda else "none"),
        ("the LLM", (llm / "config.json").is_file(), str(llm)),
        ("the text encoder", (encoder / "config.json").is_file(), str(encoder)),
        ("ml-100k", bool(find_layout(dataset, "ml-100k")), str(dataset)),
        ("faiss-gpu (optional)", True, "yes" if gpu_faiss else f"no (faiss {faiss.__version__})"),
    ]


def main(argv: list[str] | None = None) -> int:
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--cpu", action="store_true", help="The dry run: no CUDA needed.")
    args = options.parse_args(argv)
    missing = 0
    for what, present, detail in needs(args.cpu):
        print(f"  {'ok' if present else 'MISSING':8} {what}: {detail}")
        missing += not present
    if missing:
        print("missing needs: bench/gpu.sh downloads nothing (see its header)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
