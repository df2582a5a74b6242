"""A lease in an artifact store: one writer at a time, and a crashed writer's claim expires.

A lease is a sequence of write-once objects ``PREFIX<generation:08d>.json``; the newest one says
who holds it and until when::

    {"owner": "kfp-job:1234" | "host:pid:xxxxxx", "token": "<random>", "host": ..., "pid": ...,
     "acquired": "2026-11-30T12:00:00Z", "expires": 1796040000.0, "released": false}

- :meth:`Lease.acquire` reads the newest generation. If another writer holds it (not released,
  not expired, not a dead process on this host) it raises :class:`LeaseHeld` naming the owner
  and the expiry; otherwise it creates the next generation.
- :meth:`Lease.renew` creates the next generation for the same token (a heartbeat); if the newest
  generation is not ours any more (ours expired and another writer took over) it raises
  :class:`LeaseLost`.
- :meth:`Lease.release` creates a released generation, so the next writer need not wait.
- :meth:`Lease.keep_alive` renews from a daemon thread every ``ttl / 3`` seconds until
  :meth:`Lease.stop`, :meth:`Lease.release`, or until the lease object is garbage-collected.

What this relies on: creating a generation is the store's write-once ``put_bytes`` (two writers
racing for one generation write different bytes, so exactly one may succeed *if the store's
create-if-absent is atomic*: S3 ``If-None-Match: *``, ``O_EXCL`` locally). The winner is
confirmed by reading the generation back. Expiry compares wall clocks: writers' clocks must
agree to well within ``ttl``. Owners are labels; the same label with another token (a KFP retry
of the same job) may take the lease over.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable

from .base import (
    ArtifactExists,
    ArtifactNotFound,
    ArtifactStore,
    IntegrityError,
    StoreError,
    iso_utc,
)

#: Default lease length in seconds; a holder renews it every third of that.
DEFAULT_TTL = 300.0


class LeaseHeld(StoreError):
    """Another writer holds the lease."""


class LeaseLost(StoreError):
    """This writer's lease expired and another writer took it over."""


def default_owner() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_gone(holder: dict) -> bool:
    """True when ``holder`` names a process on this host that no longer exists."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


class Lease:
    """The lease under ``prefix`` (a key prefix ending in ``/``) for ``owner``.

    Args:
        store: the artifact store.
        prefix: where the generations live, e.g. ``experiments/E/runs/R/lease/``.
        what: how messages name the guarded thing, e.g. ``"run E/R"``.
        owner: a label for the holder; the default ``host:pid:xxxxxx`` is unique to this
            object, while an explicit label (``kfp-job:ID``) lets a retry of the same job in
            another process take the lease over.
        ttl: seconds a generation stays valid without renewal.
        clock: wall-clock seconds (tests pass a shifted clock to simulate time passing).
    """

    def __init__(self, store: ArtifactStore, prefix: str, what: str, owner: str | None = None,
                 ttl: float = DEFAULT_TTL, clock: Callable[[], float] = time.time) -> None:
        if ttl <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl}")
        self.store, self.prefix, self.what = store, prefix, what
        self.token = secrets.token_hex(8)
        self.owner = owner or f"{default_owner()}:{self.token[:6]}"
        self.ttl, self.clock = float(ttl), clock
        self.held = False
        self.lost: LeaseLost | None = None
        self._stop: threading.Event | None = None

    # -- reading -------------------------------------------------------------------------------
    def _newest(self) -> tuple[int, dict | None]:
        """(newest generation number or -1, its contents or None when unreadable)."""
        for _ in range(5):
            keys = [k for k in self.store.list(self.prefix) if k.endswith(".json")]
            if not keys:
                return -1, None
            key = max(keys)
            try:
                generation = int(key[len(self.prefix):-len(".json")])
            except ValueError:
                return -1, None
            try:
                return generation, self.store.get_json(key)
            except ArtifactNotFound:
                continue  # removed by the holder's clean-up between list and read: list again
            except (StoreError, json.JSONDecodeError):
                return generation, None  # damaged: it cannot hold anything
        return -1, None

    def holder(self) -> dict | None:
        """The live holder's record (owner, expires, ...), or None when the lease is free."""
        _, current = self._newest()
        if not current or current.get("released") or _process_gone(current):
            return None
        if float(current.get("expires", 0)) <= self.clock():
            return None
        return current

    # -- writing -------------------------------------------------------------------------------
    def _write(self, generation: int, released: bool = False) -> None:
        now = self.clock()
        body = {"owner": self.owner, "token": self.token, "host": socket.gethostname(),
                "pid": os.getpid(), "acquired": iso_utc(now),
                "expires": now if released else now + self.ttl, "released": released}
        key = f"{self.prefix}{generation:08d}.json"
        try:
            self.store.put_json(key, body)
            mine = self.store.get_json(key).get("token") == self.token
        except (ArtifactExists, IntegrityError):  # another writer's bytes (or a torn mix)
            mine = False
        if not mine:
            raise LeaseHeld(self._held_message(self.holder()))
        if generation >= 2:  # keep the newest two generations
            self.store.delete(f"{self.prefix}{generation - 2:08d}.json")

    def _held_message(self, holder: dict | None) -> str:
        if holder is None:
            return (f"{self.what} was claimed by another writer at the same moment; "
                    "retry if that writer is gone")
        wait = max(0.0, float(holder["expires"]) - self.clock())
        return (f"{self.what} is being written by {holder.get('owner')} (lease renewed at "
                f"{holder.get('acquired')}, expires at {iso_utc(float(holder['expires']))}, in "
                f"{wait:.0f}s); let that writer finish, or if it has died, retry after the "
                "lease expires")

    def acquire(self) -> None:
        """Take the lease; raises LeaseHeld when another live writer holds it."""
        generation, current = self._newest()
        if current and not current.get("released") and not _process_gone(current) \
                and float(current.get("expires", 0)) > self.clock() \
                and current.get("token") != self.token and current.get("owner") != self.owner:
            raise LeaseHeld(self._held_message(current))
        self._write(generation + 1)
        self.held, self.lost = True, None

    def try_acquire(self) -> bool:
        """:meth:`acquire`, returning False instead of raising LeaseHeld."""
        try:
            self.acquire()
        except LeaseHeld:
            return False
        return True

    def renew(self) -> None:
        """Extend the lease by ``ttl``; raises LeaseLost when another writer holds it now."""
        generation, current = self._newest()
        if current is None or current.get("token") != self.token:
            self.held = False
            self.lost = LeaseLost(
                f"{self.what}: this writer's lease expired and "
                f"{(current or {}).get('owner', 'another writer')} took it over; stop writing "
                "(the run is not lost: the new writer continues it)")
            raise self.lost
        try:
            self._write(generation + 1)
        except LeaseHeld as exc:
            self.held = False
            self.lost = LeaseLost(f"{self.what}: lost the lease while renewing it: {exc}")
            raise self.lost from None

    def release(self) -> None:
        """Give the lease up (if this writer holds it) and stop the heartbeat."""
        self.stop()
        if not self.held:
            return
        self.held = False
        generation, current = self._newest()
        if current is not None and current.get("token") == self.token:
            try:
                self._write(generation + 1, released=True)
            except LeaseHeld:
                pass  # someone took it over meanwhile: nothing of ours to release

    def check(self) -> None:
        """Raise the LeaseLost the heartbeat saw, if any (call before writing)."""
        if self.lost is not None:
            raise self.lost

    # -- heartbeat -----------------------------------------------------------------------------
    def keep_alive(self, interval: float | None = None) -> None:
        """Renew every ``interval`` seconds (default ``ttl / 3``) from a daemon thread."""
        if self._stop is not None:
            return
        stop = self._stop = threading.Event()
        ref = weakref.ref(self)
        weakref.finalize(self, stop.set)
        thread = threading.Thread(target=_heartbeat, args=(ref, stop, interval or self.ttl / 3),
                                  name=f"fdshpo-lease {self.what}", daemon=True)
        thread.start()

    def stop(self) -> None:
        """Stop the heartbeat (the lease then lapses at its expiry unless released)."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None


def _heartbeat(ref: weakref.ref, stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        lease = ref()
        if lease is None or not lease.held:
            return
        try:
            lease.renew()
        except LeaseLost:
            return
        except StoreError:
            pass  # a transient failure: the next beat retries before the lease runs out
        finally:
            del lease
