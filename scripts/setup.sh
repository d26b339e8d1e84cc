# Shared by scripts/run and scripts/test: system packages, the checkout's virtualenv.
# Source it; it defines functions and sets ROOT (the checkout) and VENV.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 DEBIAN_FRONTEND=noninteractive

say() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        say "need root for: $*"
        return 1
    fi
}

# Debian's own python3 when it is 3.11+ (apt's python3-venv matches it), else the PATH's.
pick_python() {
    local candidate
    for candidate in /usr/bin/python3 python3; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    say "Python 3.11 or newer is required"
    return 1
}

# install_system PKG...: apt-get install what is missing; apt-get update only then.
install_system() {
    local pkg missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    say "installing system packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# install_python [EXTRA]: the checkout's .venv with the locked dependencies
# (requirements/run.txt, or requirements/EXTRA.txt: pinned versions with their hashes, so two
# machines get the same packages) and the project itself installed editable on top. Skipped
# when neither the lock nor pyproject.toml has changed since the last install.
install_python() {
    local extra="${1:-}" lock="$ROOT/requirements/run.txt" stamp="$VENV/.hotline-installed" want
    [ -n "$extra" ] && lock="$ROOT/requirements/$extra.txt"
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        "$(pick_python)" -m venv "$VENV"
    fi
    want="$(cat "$lock" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1) ${extra:-run}"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    say "installing Python packages from ${lock#"$ROOT"/}"
    "$VENV/bin/python" -m pip install -q --require-hashes -r "$lock"
    (cd "$ROOT" && "$VENV/bin/python" -m pip install -q --no-deps -e .)
    echo "$want" >"$stamp"
}

# A PostgreSQL that answers on 127.0.0.1:5432 but refuses the trust login the tests use
# (Debian's own cluster asks for a password over TCP) is as good as none: point the tests
# at a closed port so that they start their own server.
use_postgres_if_usable() {
    local port="${HOTLINE_TEST_PG_PORT:-5432}"
    if ! "$VENV/bin/python" - "$port" <<'PY'
import sys, psycopg
from tests.services import port_open
port = int(sys.argv[1])
if port_open("127.0.0.1", port):
    try:
        psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                        connect_timeout=5).close()
    except psycopg.Error as exc:
        print(f"PostgreSQL on port {port} refuses the tests ({str(exc).strip()}); "
              "they will start their own", file=sys.stderr)
        sys.exit(1)
PY
    then
        HOTLINE_TEST_PG_PORT="$("$VENV/bin/python" -c 'from tests.services import free_port; print(free_port())')"
        export HOTLINE_TEST_PG_PORT
    fi
}

# run_as_platform_user CMD...: as root, run CMD as the unprivileged system user `hotline`,
# with the data directory (HOTLINE_DATA_DIR, else `var` here) given to it — no process of
# the platform needs root, and a Celery worker run as root is one any task can turn against
# the machine. `hotline` commands root runs later on that data become the same user
# (cli/privileges.py). Not root, or a checkout that user cannot read (say, under /root):
# CMD as it is, and `hotline run` says that it runs as root.
run_as_platform_user() {
    local user=hotline data="${HOTLINE_DATA_DIR:-var}"
    if [ "$(id -u)" -ne 0 ]; then
        exec "$@"
    fi
    if ! id -u "$user" >/dev/null 2>&1; then
        say "creating the system user $user (the platform's processes run as it)"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin "$user"
    fi
    if ! (cd "$ROOT" && runuser -u "$user" -- "$VENV/bin/python" -c 'import cli.app') \
        >/dev/null 2>&1; then
        say "$user cannot read $ROOT (its directories are closed to other users): running as root"
        exec "$@"
    fi
    mkdir -p "$data"
    chown -R "$user:$user" "$data"
    exec "$@"
}
