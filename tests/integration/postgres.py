"""A real PostgreSQL server for tests: Debian's `postgresql` package (installed with apt-get
when absent and we may), a throwaway cluster in a temporary folder, listening on loopback only
at a free port, stopped and removed afterwards."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(found[-1]).parent if found else None


def ensure_installed() -> Path:
    """The server binaries' folder, installing Debian's package when absent."""
    bin_dir = _bin_dir()
    if bin_dir is not None:
        return bin_dir
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise RuntimeError("PostgreSQL server binaries are missing and cannot be installed here "
                           "(needs root and apt-get); run: apt-get install -y postgresql")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in ([apt, "update", "-q"], [apt, "install", "-y", "-q", "--no-install-recommends", "postgresql"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    bin_dir = _bin_dir()
    if bin_dir is None:
        raise RuntimeError("apt-get installed postgresql but no initdb was found")
    return bin_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(database: str = "ablate_test", user: str = "ablate"):
    """Yields a URL (with a password, to check that it is never printed) of a fresh database."""
    bin_dir = ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="ablate-pg-"))
    as_root = os.geteuid() == 0  # the server refuses to run as root: run it as `postgres`
    run_as = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        shutil.chown(root, "postgres")
        root.chmod(0o700)
    data, log, port = root / "data", root / "server.log", _free_port()

    def call(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([*run_as, *cmd], capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr or done.stdout}\n{tail}")
        return done

    call(str(bin_dir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8")
    try:
        call(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
             f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c max_connections=50", "start")
        call(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database)
        yield f"postgresql://{user}:not-a-real-secret@127.0.0.1:{port}/{database}"
    finally:
        call(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
