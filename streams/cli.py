"""The stream plane's commands: the faust worker, replaying a dataset into Kafka, and
sending a user's events as an app would (the producer SDK)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from streamrec.settings import get_settings
from streamrec.terminal import console, fail

stream_app = typer.Typer(help="The stream plane.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(stream_app, name="stream")
    app.command()(replay)
    app.command()(send)


# Allocations (net of frees) between two young-generation collections; Python's is 700.
YOUNG_COLLECTION_EVERY = 50_000


def _collect_garbage_less_often() -> None:
    """A worker holds up to a few batches of events in faust's buffers, hundreds of
    thousands of tracked objects; at Python's thresholds the collector scanned them so
    often that it was a third of the worker's CPU (bench/results/ingest-profile.md).
    What is loaded at start is frozen out of every scan, and the young generation is
    collected after 50,000 allocations instead of 700: the few cycles a batch leaves
    live a little longer."""
    import gc

    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, 10, 10)


@stream_app.command("worker")
def stream_worker(
    loglevel: Annotated[
        str | None, typer.Option(help="faust log level (default: warning; info with -v).")
    ] = None,
) -> None:
    """Run the faust stream worker until stopped (topics are created first)."""
    import faust

    from streamrec.logs import verbose_requested
    from streams.topics import ensure_topics

    loglevel = loglevel or ("info" if verbose_requested() else "warning")

    settings = get_settings()
    ensure_topics(settings)
    from streams.app import app as faust_app
    from streams.profiling import start_profiling

    start_profiling(settings.streams.profile_path)

    if settings.streams.static_membership:
        from streams.membership import claim_instance_id

        faust_app.conf.consumer_group_instance_id = claim_instance_id(
            settings.streams.app_id,
            settings.data_dir / "faust" / "members" / settings.streams.app_id,
        )

    # Below the chosen level nothing is printed, yet the Kafka clients build a
    # log record per message unless records that low are switched off.
    logging.disable(logging.getLevelName(loglevel.upper()) - 1)
    _collect_garbage_less_often()
    faust.Worker(faust_app, loglevel=loglevel, quiet=True).execute_from_commandline()


def replay(
    dataset: Annotated[str, typer.Argument(help="Dataset name, e.g. ml-100k.")] = "ml-100k",
    rate: Annotated[float | None, typer.Option(help="Events per second.")] = None,
    speedup: Annotated[
        float | None, typer.Option(help="Keep the dataset's own gaps, divided by this.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Send only the first N interactions.")] = None,
) -> None:
    """Replay a dataset's items, then its interactions in time order, into Kafka."""
    if rate is not None and speedup is not None:
        fail("give --rate or --speedup, not both")
    from streams.replay import replay_dataset
    from streams.topics import ensure_topics

    settings = get_settings()
    ensure_topics(settings)
    summary = replay_dataset(settings, dataset, rate=rate, speedup=speedup, limit=limit)
    console.print(summary.describe())


def send(
    user_id: Annotated[int, typer.Argument(help="The user's id.")],
    item_ids: Annotated[list[int], typer.Argument(help="Item ids, in the order they happened.")],
    event_type: Annotated[str, typer.Option(help="view, click, purchase, rating, ...")] = "click",
) -> None:
    """Send one interaction event per item to the interactions topic, as an app would."""
    from streams.producer import InteractionProducer

    try:
        with InteractionProducer.from_settings(get_settings()) as events:
            for item_id in item_ids:
                events.send(user_id=user_id, item_id=item_id, event_type=event_type)
    except (ValueError, RuntimeError) as error:
        fail(str(error))
    console.print(f"sent {len(item_ids)} {event_type} events for user {user_id}")
