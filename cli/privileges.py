"""Root runs the platform as the user who owns its data directory.

A Celery worker started as root warns that this "is absolutely not recommended" — a task
could then do anything to the machine — and the web server and SIP edge, which face the
network, have no need for root either. `./scripts/run` on a fresh machine is run as root,
so it gives the data directory to an unprivileged system user (`hotline`); from then on every
`hotline` command root starts there — `run`, and the administration commands on the same
data — first becomes that user (`act_as_data_owner`, called before any command runs), so
that whatever the platform writes (the database, recordings, prompts, the broker's files)
stays that user's and no process of the platform runs as root.

A data directory root owns (or none yet) changes nothing: `hotline run` then warns that it
runs as root, and production refuses root outright (cli/processes.py).
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path


class PrivilegeError(Exception):
    """Root could not become the data directory's owner."""


def data_owner(data_dir: Path) -> pwd.struct_passwd | None:
    """The unprivileged user who owns ``data_dir``, or None (root's, absent, or an owner the
    system does not know: a number from another machine is nobody to become)."""
    try:
        uid = data_dir.stat().st_uid
    except OSError:
        return None
    if uid == 0:
        return None
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        return None


def act_as_data_owner(data_dir: Path) -> str | None:
    """When root: become the owner of ``data_dir`` if an unprivileged user owns it (its
    groups, then its uid, for good: this process cannot become root again). The name of the
    user become, or None when nothing changed."""
    if os.geteuid() != 0:
        return None
    owner = data_owner(data_dir)
    if owner is None:
        return None
    try:
        os.setgroups(os.getgrouplist(owner.pw_name, owner.pw_gid))
        os.setgid(owner.pw_gid)
        os.setuid(owner.pw_uid)
    except OSError as exc:
        raise PrivilegeError(
            f"running as root on {data_dir}, which belongs to {owner.pw_name}: cannot become "
            f"{owner.pw_name} ({exc.strerror or exc}); run the command as {owner.pw_name}"
        ) from None
    # What the children and libraries read for "the user": theirs, not root's.
    home = owner.pw_dir if os.access(owner.pw_dir, os.W_OK) else str(data_dir)
    os.environ.update(HOME=home, USER=owner.pw_name, LOGNAME=owner.pw_name)
    return owner.pw_name
