"""The alignment job's outputs as registry versions: the LoRA adapter, then the aligned
recommender (with the aligned LLM's knowledge) that names it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.registry import LLM_ADAPTER_FAMILY, VersionMetadata, publish
from workers.knowledge_pipeline import aligned_llm_version

if TYPE_CHECKING:
    from workers.alignment.job import Prepared


def publish_outputs(settings, prepared: Prepared, metrics: dict, summary: dict) -> tuple:
    """The adapter as an `llm-adapter` version, then the aligned Rec (with the aligned
    knowledge) as a `recommender.family` version that names it; each announced."""
    base_llm = prepared.knowledge_summary.get("llm_version") or prepared.knowledge_summary.get(
        "llm", "default"
    )
    alignment = settings.alignment.model_dump()
    with tempfile.TemporaryDirectory(prefix="streamrec-align-") as scratch:
        adapter_folder = Path(scratch) / "adapter"
        prepared.parts.policy.save_pretrained(adapter_folder)
        adapter = publish(
            settings,
            LLM_ADAPTER_FAMILY,
            adapter_folder,
            VersionMetadata(
                metrics=metrics,
                llm_version=base_llm,
                extra={"alignment": alignment, "run": summary},
            ),
        )
        recommender_folder = Path(scratch) / "seralm"
        # The recommender holds the aligned table (set by run_job): it is what is saved.
        prepared.parts.recommender.save_pretrained(
            recommender_folder, prepared.data.item_ids, extra={"aligned_with": adapter.version}
        )
        seralm = publish(
            settings,
            settings.recommender.family,
            recommender_folder,
            VersionMetadata(
                metrics=metrics,
                llm_version=aligned_llm_version(base_llm, adapter.version),
                adapter_version=adapter.version,
                extra={"run": summary, "knowledge_channels": aligned_provenance(prepared, adapter)},
            ),
        )
    return adapter, seralm


def aligned_provenance(prepared: Prepared, adapter) -> dict:
    """Both channels' provenance after alignment: the facts as they were, the LLM channel
    rewritten by the LLM with the new adapter."""
    provenance = {
        key: dict(value) for key, value in prepared.knowledge_summary["provenance"].items()
    }
    llm = provenance["llm"]
    llm["llm_version"] = aligned_llm_version(llm.get("llm_version") or "default", adapter.version)
    llm["adapter_version"] = adapter.version
    return provenance
