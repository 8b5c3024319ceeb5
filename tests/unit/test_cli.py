"""The CLI package: every area's commands are on the one app, and a command does what
its flags say (run as `streamrec` itself, in a child process with its own data dir)."""

from __future__ import annotations

import typer

from streamrec.cli import app
from streamrec.registry import ModelRegistry
from streamrec.services.children import run_streamrec
from streamrec.settings import Settings

COMMANDS = {
    "up", "status", "down", "send", "history", "recommend", "replay", "serve", "train",
    "eval", "align",
    "services start", "services stop", "services status", "db migrate", "data fetch",
    "assets fetch", "stream worker", "worker trainer", "worker knowledge",
    "worker scheduler", "jobs list", "jobs show", "jobs page", "genrec train",
    "recsysllm train", "knowledge generate",
}  # fmt: skip


def command_paths(command, prefix: str = "") -> set[str]:
    if not hasattr(command, "commands"):  # a leaf, not a group
        return {prefix.strip()}
    return set().union(
        *(command_paths(sub, f"{prefix} {name}") for name, sub in command.commands.items())
    )


def test_the_app_has_each_command_once():
    assert command_paths(typer.main.get_command(app)) == COMMANDS


def test_train_publishes_only_when_asked(tmp_path):
    environment = {
        "STREAMREC_DATA_DIR": str(tmp_path),
        "STREAMREC_RECOMMENDER__EPOCHS": "1",
        "STREAMREC_RECOMMENDER__THREADS": "1",
    }
    registry = ModelRegistry.from_settings(Settings(data_dir=tmp_path))
    family = Settings().recommender.family
    for out, flags in (("kept", []), ("published", ["--publish"])):
        args = ["train", "--model", "sasrec", "--fraction", "0.05", "--out", str(tmp_path / out)]
        result = run_streamrec(*args, *flags, environment=environment, timeout_s=300)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / out / "model.safetensors").is_file()
        if not flags:
            assert registry.latest(family) is None
    assert registry.latest(family).version == "v000001"
