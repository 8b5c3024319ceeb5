"""`python -m streamrec.cli`: how `up` and the scheduler run commands as child processes."""

from streamrec.cli import app

app()
