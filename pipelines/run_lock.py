"""One run per logical date at a time (DESIGN §3: idempotent, atomic steps; issue "resumability").

``runs/D/_RUNNING.json`` names the owner (host, pid, a random token) and an expiry the owner
pushes forward after every step (:meth:`RunLock.refresh`). A second run of the same date is
refused with who holds it. The lock survives a crash without blocking forever: it is taken
over when its owner process is gone (same host, pid not alive) or its expiry has passed
(another host, or a hung owner).

On a local root the file is created with ``O_CREAT | O_EXCL``, which is atomic. Object stores
reached through Beam FileSystems have no create-if-absent, so there the lock writes its token
and reads it back: two runs starting within the same instant can both pass (best effort);
schedulers (Airflow's ``max_active_runs``) are the primary guard at scale.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
import uuid

from components.lake import Lake, fs
from components.step import StepError

LOCK_FILE = "_RUNNING.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    def __init__(self, lake: Lake, date: dt.date, ttl_seconds: float):
        self.path = fs.join(lake.run_dir(date), LOCK_FILE)
        self.date, self.ttl = date, ttl_seconds
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}

    def _record(self) -> str:
        now = time.time()
        return json.dumps({**self.owner, "date": self.date.isoformat(), "started": self._started,
                           "expires": now + self.ttl,
                           "expires_at": dt.datetime.fromtimestamp(now + self.ttl, dt.timezone.utc).isoformat()})

    def _stale_reason(self, held: dict) -> str | None:
        if held.get("host") == self.owner["host"] and not _alive(int(held.get("pid", -1))):
            return f"its process {held.get('pid')} on this host is gone"
        if time.time() > float(held.get("expires", 0)):
            return f"it expired at {held.get('expires_at')}"
        return None

    def acquire(self, progress=print) -> "RunLock":
        self._started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        for _ in range(3):
            if self._create():
                return self
            try:
                held = json.loads(fs.read_text(self.path))
            except (OSError, ValueError):  # removed meanwhile, or half written by a crashed owner
                held = {}
            reason = self._stale_reason(held) if held else "it is unreadable"
            if reason is None:
                raise StepError(
                    f"{self.date} is already being run by pid {held.get('pid')} on {held.get('host')} since "
                    f"{held.get('started')} (lock {self.path}, held until {held.get('expires_at')} unless renewed). "
                    "Wait for it to finish; if that run is dead on another machine, delete the lock file.")
            progress(f"taking over the lock of {self.date}: {reason}")
            fs.delete_tree(self.path)
        raise StepError(f"could not take the lock {self.path}: other runs keep taking it")

    def _create(self) -> bool:
        if fs.is_local(self.path):
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(self._record())
            return True
        if fs.exists(self.path):
            return False
        fs.write_text(self.path, self._record())
        return json.loads(fs.read_text(self.path)).get("token") == self.owner["token"]

    def refresh(self) -> None:
        """Push the expiry forward (after each step), if the lock is still ours."""
        try:
            if json.loads(fs.read_text(self.path)).get("token") == self.owner["token"]:
                fs.write_text(self.path, self._record())
        except (OSError, ValueError):
            pass

    def release(self) -> None:
        try:
            if json.loads(fs.read_text(self.path)).get("token") == self.owner["token"]:
                fs.delete_tree(self.path)
        except (OSError, ValueError):
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False
