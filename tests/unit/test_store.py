"""Telling a live worker's trial from a dead one's, and the store's lock."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

from ablate.store import STALE_S, Backend, stale
from ablate.study import parse_study

HOST = socket.gethostname()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_by_local_pid_or_old_heartbeat():
    now = time.time()
    assert not stale({"worker": f"{HOST}:{os.getpid()}", "heartbeat": now}, now - 5, now)
    assert stale({"worker": f"{HOST}:{_dead_pid()}", "heartbeat": now}, now - 5, now)
    # another machine's worker: judged by its heartbeat only
    assert not stale({"worker": "elsewhere:1", "heartbeat": now - 10}, now - 999, now)
    assert stale({"worker": "elsewhere:1", "heartbeat": now - STALE_S - 1}, now - 999, now)
    assert stale({"worker": "elsewhere:1"}, now - STALE_S - 1, now)  # never beat: its start counts
    assert stale({}, now, now)  # claimed but never recorded: its process died in between
    # a live local pid whose heartbeat stopped long ago (a reused pid) is stale too
    assert stale({"worker": f"{HOST}:{os.getpid()}", "heartbeat": now - STALE_S - 1}, now, now)


def test_sqlite_lock_excludes_other_holders(tmp_path):
    study = parse_study("name: locked\n", "s.yaml")
    a, b = Backend(study, tmp_path), Backend(study, tmp_path)
    order = []

    def second():
        with b.lock():
            order.append("b")

    with a.lock():
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("a")
    t.join(10)
    assert order == ["a", "b"]
