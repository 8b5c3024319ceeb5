"""`streamrec serve` (the gRPC server of the serving plane) and `streamrec jobs page` (the
ops status page it serves)."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from streamrec.settings import get_settings
from streamrec.terminal import console, fail, with_overrides


def register(app: typer.Typer, jobs_app: typer.Typer) -> None:
    app.command()(serve)
    jobs_app.command("page")(jobs_page)


def serve(
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
    host: Annotated[str | None, typer.Option(help="Address (default from settings).")] = None,
) -> None:
    """Run the gRPC server (every built service, health, reflection) until Ctrl-C."""
    import asyncio

    from serving.server import build_servicers, start_metrics, start_server

    settings = with_overrides(get_settings(), "serving", port=port, host=host)
    serving = settings.serving
    if serving.metrics_port:
        try:
            start_metrics(settings)
        except OSError as error:  # a second server on one host: serve, without /metrics
            console.print(f"no /metrics on port {serving.metrics_port}: {error}")

    async def run() -> None:
        server, bound = await start_server(settings, build_servicers(settings))
        console.print(f"serving on {serving.host}:{bound}")
        try:
            await server.wait_for_termination()
        finally:
            await server.stop(None)

    # SIGTERM (`up` stopping its children, Kubernetes) unwinds like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        console.print("stopped")
    except (OSError, RuntimeError) as error:
        fail(str(error))


def jobs_page(
    port: Annotated[int | None, typer.Option(help="Port of the status page.")] = None,
) -> None:
    """The status page of recent runs (and /metrics of their figures)."""
    import asyncio

    from serving.ops import run_status_page

    try:
        asyncio.run(run_status_page(with_overrides(get_settings(), "ops", page_port=port)))
    except KeyboardInterrupt:
        console.print("stopped")
