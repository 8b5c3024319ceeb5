"""The workers' commands: the online trainer, knowledge and scheduler workers, offline
training and evaluation, GenRec and RecSysLLM, knowledge generation and alignment."""

from __future__ import annotations

import typer

from workers.cli import knowledge, train, worker


def register(app: typer.Typer) -> None:
    for area in (worker, train, knowledge):
        area.register(app)
