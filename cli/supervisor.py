"""The process supervisor of `hotline run`: starts web, SIP edge and worker as children, each in
a session of its own, and stops them all together on a signal or when one dies."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import typer


@dataclass
class Child:
    name: str
    proc: subprocess.Popen


def start(name: str, argv: list[str]) -> Child:
    # A session of its own: Ctrl-C reaches only us, and we stop the children in order.
    return Child(name, subprocess.Popen(argv, start_new_session=True))


def stop_all(children: list[Child], timeout: float = 15.0) -> None:
    for child in children:
        if child.proc.poll() is None:
            child.proc.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            typer.echo(f"{child.name} did not stop within {timeout:.0f}s; killing it", err=True)
            child.proc.kill()
            child.proc.wait()


class _Stop(Exception):
    pass


def supervise(children: list[Child], poll: float = 0.2) -> int:
    """Wait until a signal arrives (exit 0) or a child dies (stop the rest, exit 1)."""

    def on_signal(signum: int, _frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            for child in children:
                code = child.proc.poll()
                if code is not None:
                    typer.secho(
                        f"{child.name} exited with status {code}; stopping the rest",
                        fg=typer.colors.RED,
                        err=True,
                    )
                    stop_all(children)
                    return 1
            time.sleep(poll)
    except _Stop as stop:
        typer.echo(f"\n{stop} received; stopping {', '.join(c.name for c in children)}")
        for signum in previous:  # a second Ctrl-C must not cut the stopping short
            signal.signal(signum, signal.SIG_IGN)
        stop_all(children)
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
