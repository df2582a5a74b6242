"""A lease in an artifact store: one writer at a time, a crashed writer's claim expires, and the
writes of a writer that lost it are fenced off.

A lease is a sequence of write-once objects ``PREFIX<generation:08d>.json``; the newest one says
who holds it::

    {"owner": "kfp-job:1234" | "host:pid:xxxxxx", "token": "<random>", "per_process": bool,
     "host": ..., "boot_id": ..., "pid_ns": "pid:[4026531836]", "pid": ...,
     "acquired": "2026-11-30T12:00:00Z", "ttl": 300.0, "released": false}

The rules:

- **Who holds it.** The newest generation's owner, unless that generation is released, damaged
  (an integrity failure or bytes that do not decode: nothing else), expired, or names a dead
  process (below). Owners are labels: every process with the same label holds the lease
  together (the steps of one pipeline job, ``kfp-job:<job id>``, and a retry of that job); the
  default label ``host:pid:xxxxxx`` is unique to one :class:`Lease` object.
- **Expiry by the store's clock.** A generation expires ``ttl`` seconds after it was written,
  as the store measures it (:meth:`~fdshpo.store.ArtifactStore.age`: S3's ``Date`` minus the
  object's ``Last-Modified``), never by a writer's own wall clock.
- **Dead processes.** A per-process holder whose process no longer exists frees the lease at
  once, but only when it ran on this very machine and PID namespace (same host name, boot id
  and PID namespace): a PID means nothing in another container or after a reboot.
- **Errors are not a free lease.** Any store error other than damage, while reading the lease,
  makes :meth:`Lease.acquire` refuse (:class:`LeaseUnknown`) and the heartbeat retry; it never
  lets a second writer in or makes the holder give up.
- **Fencing.** :meth:`Lease.check`, called before each write (:class:`FencedStore` does it for
  every put and delete), refuses unless this writer holds the lease: its own last renewal is
  younger than ``ttl`` less a margin by its monotonic clock, and the newest generation in the
  store, read then, is still its owner's. A writer that stalled past its lease, or was taken
  over, gets :class:`LeaseLost` instead of writing.

- :meth:`Lease.acquire` takes the lease (creating the next generation) or raises
  :class:`LeaseHeld` naming the holder and when its lease expires.
- :meth:`Lease.renew` creates the next generation for the same owner (a heartbeat);
  :class:`LeaseLost` if another owner holds it now.
- :meth:`Lease.release` creates a released generation, so the next writer need not wait.
- :meth:`Lease.keep_alive` renews from a daemon thread every ``ttl / 3`` seconds (after a
  failed renewal, every few seconds) until :meth:`Lease.stop`, :meth:`Lease.release`, the
  lease is lost, or the lease object is garbage-collected.

What this relies on: creating a generation is the store's write-once ``put_bytes`` (two writers
racing for one generation write different bytes, so exactly one succeeds *if the store's
create-if-absent is atomic*: S3 ``If-None-Match: *``, a hard link locally), and the store's
clock and each holder's monotonic clock run at about the same rate.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Mapping

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
#: A holder stops writing this long before its lease could expire (store dates are to the
#: second), or a twentieth of the ttl if that is longer.
MARGIN = 2.0
#: Seconds between heartbeat retries after a failed renewal (at most the renewal interval).
RETRY = 5.0
_GENERATION = re.compile(r"^(\d{8})\.json$")


class LeaseHeld(StoreError):
    """Another writer holds the lease."""


class LeaseLost(StoreError):
    """This writer does not hold the lease (any more): it must not write."""


class LeaseUnknown(StoreError):
    """The lease could not be read (a store error that is not damage); nobody may take it."""


def default_owner() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _read(path: str, link: bool = False) -> str | None:
    try:
        return os.readlink(path) if link else open(path).read().strip()  # noqa: SIM115
    except OSError:
        return None


def this_process() -> dict:
    """Where this process runs: host name, boot id and PID namespace (None where unknown)
    and its PID."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "boot_id": _read("/proc/sys/kernel/random/boot_id"),
            "pid_ns": _read("/proc/self/ns/pid", link=True)}


def same_process_space(holder: Mapping, here: Mapping) -> bool:
    """True when ``holder`` ran on this machine in this PID namespace: same host name, boot id
    and PID namespace, each known. Only then does the holder's PID name a process here."""
    return all(holder.get(k) is not None and holder.get(k) == here.get(k)
               for k in ("host", "boot_id", "pid_ns"))


def process_gone(holder: Mapping, here: Mapping | None = None) -> bool:
    """True when ``holder`` is a per-process owner (not a label shared by several processes)
    in this process space (:func:`same_process_space`) whose PID no longer exists."""
    here = this_process() if here is None else here
    pid = holder.get("pid")
    if not holder.get("per_process") or not isinstance(pid, int) \
            or not same_process_space(holder, here):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def ttl_of(holder: Mapping) -> float:
    """The lease length a generation was written with (older generations: the default)."""
    try:
        return float(holder.get("ttl", DEFAULT_TTL))
    except (TypeError, ValueError):
        return DEFAULT_TTL


def is_free(holder: Mapping | None, age: float | None) -> bool:
    """Whether the newest generation ``holder`` (None: none, or damaged), written ``age``
    seconds ago by the store's clock, leaves the lease free for anyone."""
    return (holder is None or bool(holder.get("released")) or age is None
            or age >= ttl_of(holder) or process_gone(holder))


class Lease:
    """The lease under ``prefix`` (a key prefix ending in ``/``) for ``owner``.

    Args:
        store: the artifact store.
        prefix: where the generations live, e.g. ``experiments/E/runs/R/lease/``.
        what: how messages name the guarded thing, e.g. ``"run E/R"``.
        owner: a label for the holder; the default ``host:pid:xxxxxx`` is unique to this
            object, while an explicit label (``kfp-job:ID``) is shared by every process that
            gives it (the steps of one pipeline job and a retry of that job).
        ttl: seconds a generation stays valid without renewal (by the store's clock).
    """

    def __init__(self, store: ArtifactStore, prefix: str, what: str, owner: str | None = None,
                 ttl: float = DEFAULT_TTL) -> None:
        if ttl <= 0:
            raise ValueError(f"lease ttl must be positive, got {ttl}")
        self.store, self.prefix, self.what = store, prefix, what
        self.token = secrets.token_hex(8)
        self.per_process = owner is None
        self.owner = owner or f"{default_owner()}:{self.token[:6]}"
        self.ttl = float(ttl)
        self.margin = max(MARGIN, self.ttl / 20)
        self.held = False
        self.lost: LeaseLost | None = None
        self._valid_until = float("-inf")  # time.monotonic() when this holder must stop
        self._stop: threading.Event | None = None

    # -- reading -------------------------------------------------------------------------------
    def _newest(self, timed: bool = True) -> tuple[int, dict | None, float | None]:
        """(newest generation number or -1, its contents or None when damaged, its age by the
        store's clock; None unless ``timed``). Store errors other than damage are raised."""
        for _ in range(5):
            numbers = [int(m.group(1)) for k in self.store.list(self.prefix)
                       if (m := _GENERATION.match(k[len(self.prefix):]))]
            if not numbers:
                return -1, None, None
            key = self._key(max(numbers))
            try:
                age = self.store.age(key) if timed else None
                doc = self.store.get_json(key)
            except ArtifactNotFound:
                continue  # removed by the holder's clean-up between list and read: list again
            except (IntegrityError, ValueError):
                return max(numbers), None, None  # damaged: it cannot hold anything
            return max(numbers), doc if isinstance(doc, dict) else None, age
        raise LeaseUnknown(f"{self.what}: its lease generations kept vanishing while reading "
                           "them; retry")

    def _key(self, generation: int) -> str:
        return f"{self.prefix}{generation:08d}.json"

    def _ours(self, holder: Mapping | None) -> bool:
        return holder is not None and holder.get("owner") == self.owner \
            and not holder.get("released")

    def holder(self) -> dict | None:
        """The live holder's record (owner, ttl, ...), or None when the lease is free."""
        _, current, age = self._newest()
        return None if is_free(current, age) else current

    # -- writing -------------------------------------------------------------------------------
    def _write(self, generation: int, started: float, released: bool = False) -> None:
        """Create ``generation``; ``started``: time.monotonic() before the newest generation
        was read (the renewal counts from then). Raises LeaseHeld when another owner wrote
        that generation first (a peer with this owner's label winning is a renewal)."""
        body = {"owner": self.owner, "token": self.token, "per_process": self.per_process,
                **this_process(), "acquired": iso_utc(time.time()), "ttl": self.ttl,
                "released": released}
        try:
            self.store.put_json(self._key(generation), body)
        except ArtifactExists:
            _, current, age = self._newest()
            if released or not self._ours(current):
                raise LeaseHeld(self._held_message(current, age)) from None
        else:
            if generation >= 2:  # keep the newest two generations
                try:
                    self.store.delete(self._key(generation - 2))
                except StoreError:
                    pass  # an old generation left behind holds nothing
        if not released:
            self._valid_until = started + self.ttl - self.margin

    def _held_message(self, holder: Mapping | None, age: float | None) -> str:
        if holder is None or age is None:
            return (f"{self.what} was claimed by another writer at the same moment; "
                    "retry if that writer is gone")
        left = max(0.0, ttl_of(holder) - age)
        return (f"{self.what} is being written by {holder.get('owner')} (lease renewed "
                f"{age:.0f}s ago by the store's clock, expires in {left:.0f}s unless renewed); "
                "let that writer finish, or if it has died, retry after the lease expires")

    def acquire(self) -> None:
        """Take the lease (or, for an owner label other processes share, join it).

        Raises LeaseHeld when another live writer holds it, LeaseUnknown when the lease
        cannot be read (a store error that is not damage: nobody may take it then)."""
        started = time.monotonic()
        try:
            generation, current, age = self._newest()
        except LeaseUnknown:
            raise
        except StoreError as exc:
            raise LeaseUnknown(f"{self.what}: cannot read its lease, so it is not taken: "
                               f"{exc}. Retry when the store answers") from None
        if not is_free(current, age) and not self._ours(current):
            raise LeaseHeld(self._held_message(current, age))
        self._write(generation + 1, started)
        self.held, self.lost = True, None

    def try_acquire(self) -> bool:
        """:meth:`acquire`, returning False instead of raising LeaseHeld or LeaseUnknown."""
        try:
            self.acquire()
        except (LeaseHeld, LeaseUnknown):
            return False
        return True

    def _lose(self, message: str) -> LeaseLost:
        self.held = False
        self.lost = LeaseLost(f"{self.what}: {message}; stop writing (the run is not lost: "
                              "it resumes from its checkpoints)")
        return self.lost

    def renew(self) -> None:
        """Extend the lease by ``ttl``. Raises LeaseLost when another owner holds it now;
        any other store error is raised as it is (the lease may still be ours: retry)."""
        started = time.monotonic()
        generation, current, _ = self._newest(timed=False)
        if not self._ours(current):
            raise self._lose(f"this writer's lease expired and "
                             f"{(current or {}).get('owner', 'another writer')} took it over")
        try:
            self._write(generation + 1, started)
        except LeaseHeld as exc:
            raise self._lose(f"lost the lease while renewing it: {exc}") from None

    def release(self) -> None:
        """Give the lease up (if this writer holds it) and stop the heartbeat. A store error
        is a warning: the lease then lapses at its expiry."""
        self.stop()
        if not self.held:
            return
        self.held = False
        try:
            generation, current, _ = self._newest(timed=False)
            if self._ours(current):
                self._write(generation + 1, time.monotonic(), released=True)
        except LeaseHeld:
            pass  # someone took it over meanwhile: nothing of ours to release
        except StoreError as exc:
            warnings.warn(f"{self.what}: could not release the lease ({exc}); it expires "
                          f"within {self.ttl:.0f}s", stacklevel=2)

    def check(self) -> None:
        """Fencing, before each write: raise LeaseLost unless this writer holds the lease,
        its last renewal (by its monotonic clock) is younger than ``ttl`` less the margin, and
        the newest generation in the store is still its owner's."""
        if self.lost is not None:
            raise self.lost
        if not self.held:
            raise LeaseLost(f"{self.what}: this writer does not hold the lease; take it "
                            "(RunRecorder.start, or hold in a pipeline step) before writing")
        if time.monotonic() > self._valid_until:
            raise self._lose(f"the lease was not renewed within {self.ttl:.0f}s less "
                             f"{self.margin:.0f}s, so another writer may hold it now")
        _, current, _ = self._newest(timed=False)
        if not self._ours(current):
            raise self._lose(f"{(current or {}).get('owner', 'another writer')} took the "
                             "lease over")

    def fence(self, store: ArtifactStore | None = None) -> FencedStore:
        """``store`` (default: the lease's) with every write checked by :meth:`check`."""
        return FencedStore(store or self.store, self)

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
    """Renew every ``interval``; after a store error, retry every ``RETRY`` seconds until the
    lease's own deadline passes (then it is lost: :meth:`Lease.check` refuses writes)."""
    wait = interval
    while not stop.wait(wait):
        lease = ref()
        if lease is None or not lease.held:
            return
        try:
            lease.renew()
            wait = interval
        except LeaseLost:
            return
        except StoreError as exc:
            if time.monotonic() > lease._valid_until:
                lease._lose(f"could not renew the lease within its {lease.ttl:.0f}s ({exc})")
                return
            wait = min(interval, RETRY)  # a transient failure: retry before the lease runs out
        finally:
            del lease


class FencedStore(ArtifactStore):
    """``store`` whose writes (put, create, compare-and-write, delete) each call
    :meth:`Lease.check` first; reads go straight through. Every other attribute is the
    wrapped store's."""

    def __init__(self, store: ArtifactStore, lease: Lease) -> None:
        self.inner, self.lease, self.uri = store, lease, store.uri

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    # writes: checked, then the wrapped store's own method
    def put_bytes(self, key: str, data: bytes, overwrite: bool = False) -> str:
        self.lease.check()
        return self.inner.put_bytes(key, data, overwrite)

    def swap_bytes(self, key: str, data: bytes, expected: str | None) -> bool:
        self.lease.check()
        return self.inner.swap_bytes(key, data, expected)

    def delete(self, key: str) -> None:
        self.lease.check()
        self.inner.delete(key)

    # reads: the wrapped store's own methods
    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def checksum(self, key: str) -> str:
        return self.inner.checksum(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def age(self, key: str) -> float:
        return self.inner.age(key)

    # the primitives (the public methods above do not reach them, but whatever does gets the
    # wrapped store's, writes checked the same way)
    def _raw_put(self, key: str, data: bytes, sha256: str) -> None:
        self.lease.check()
        self.inner._raw_put(key, data, sha256)

    def _raw_create(self, key: str, data: bytes, sha256: str) -> str | None:
        self.lease.check()
        return self.inner._raw_create(key, data, sha256)

    def _raw_replace(self, key: str, data: bytes, sha256: str, expected: str) -> bool:
        self.lease.check()
        return self.inner._raw_replace(key, data, sha256, expected)

    def _raw_delete(self, key: str) -> None:
        self.lease.check()
        self.inner._raw_delete(key)

    def _raw_get(self, key: str) -> tuple[bytes, str | None]:
        return self.inner._raw_get(key)

    def _raw_checksum(self, key: str) -> str | None:
        return self.inner._raw_checksum(key)

    def _raw_list(self, prefix: str) -> list[str]:
        return self.inner._raw_list(prefix)

    def _raw_age(self, key: str) -> float:
        return self.inner._raw_age(key)

