"""Job runs, for ops: list them and show one (`jobs page`, the status page, is serving's)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from streamrec.settings import get_settings
from streamrec.terminal import fail, print_runs

jobs_app = typer.Typer(help="Job runs, for ops.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def jobs_list(
    kind: Annotated[str | None, typer.Option(help="Only runs of this kind.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only runs in this status (succeeded, failed, lost...).")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Newest runs shown.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """The newest job runs, with their figures."""
    from streamrec.jobs import list_runs

    try:
        runs = list_runs(get_settings(), kind=kind, status=status, limit=limit)
    except ValueError as error:
        fail(str(error))
    except Exception as error:  # the database is down or unreachable
        fail(f"cannot read job runs: {error}")
    if as_json:
        print(json.dumps([run.as_dict() for run in runs], indent=1))
    else:
        print_runs(runs)


@jobs_app.command("show")
def jobs_show(run_id: Annotated[str, typer.Argument(help="The run's id.")]) -> None:
    """Every field of one run, its error included."""
    from streamrec.jobs import get_run

    try:
        run = get_run(get_settings(), run_id)
    except Exception as error:
        fail(f"cannot read job runs: {error}")
    if run is None:
        fail(f"no job run {run_id}")
    print(json.dumps(run.as_dict(), indent=1))
