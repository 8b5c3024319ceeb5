"""The `streamrec` command line: the composition root.

This is the one kernel package that imports the planes (streams, workers,
serving), and only lazily inside the command that needs them, so that
`streamrec --help` stays fast and each plane keeps its own dependencies.
One module per area; each adds its commands to `app` in `register`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from streamrec import logs
from streamrec.cli import (
    jobs,
    knowledge,
    serve,
    services,
    stream,
    system,
    train,
    up,
    users,
    worker,
)

app = typer.Typer(help="streamrec: a streaming, online-learning recommender.", no_args_is_help=True)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logs.configure(verbose)


for area in (up, system, users, services, stream, serve, worker, jobs, train, knowledge):
    area.register(app)
