"""`python -m cli …` is the `hotline` command."""

from cli.app import app

app(prog_name="hotline")
