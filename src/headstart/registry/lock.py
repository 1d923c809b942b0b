"""A lease on the model registry, built on the one atomic operation MLflow offers: creating a registered
model fails when the name exists (RESOURCE_ALREADY_EXISTS), on every backend, with or without basic auth.

The lock on model `M` is a chain of generations, registered models named `M.lock.<n>`. Each is created
once, with tags that never change: `owner` (a token unique to one lock() call), `user`, and `expires`
(epoch seconds, the creator's clock); only `state=released` is added, by the holder. The generation with
the highest n (the *top*) is the lock's state:
- held by its owner while `expires` has not passed and it is not tagged `state=released`;
- free when released, expired (by more than CLOCK_SKEW_S), or owned by a dead process on this host.

Every transition is the creation of the next name, `M.lock.<top+1>`, so it is a compare-and-set on the
generation: two waiters that both find the top stale race to create the same name and exactly one wins.
- Acquire: read the top; if free, create top+1 with our token. Then read again: if a higher generation
  exists, our name was a recycled one (see clean-up) and we did not get the lock.
- Renew: while the body runs, a heartbeat thread creates top+1 with the same token and a new expiry
  every ttl/3. A renewal is the same CAS, so it cannot extend a lease that a waiter has already broken;
  if the name is taken by someone else, the lease is lost and `check()` raises before the next commit.
- Release: tag our own top `state=released` (monotonic: held -> released, written only by the holder after
  it stops acting). A release that fails (server down) is remembered in this process, which then treats
  that generation as free the next time it takes the lock; other hosts wait for it to expire.
- Clean-up: generations below the top are deleted (best effort), so the registry list shows one or two
  `M.lock.<n>` models (the top stays, tagged released), not one per move. Deleting below the top is
  safe: nothing reads them, and a waiter whose stale view makes it re-create a deleted name sees the
  higher top when it re-reads, and backs off.
The holder acts only while now < expires - margin (a lease that ran out stays lost, even if a late
renewal gets through), and waiters break only once now > expires + CLOCK_SKEW_S: hosts' clocks must
agree within CLOCK_SKEW_S (NTP does far better), and a request sent after check() must reach the server
within the margin (ttl/6; 10 s at the default ttl of 60 s). MLflow offers no fencing token, so this
timing assumption is the one a lease needs; everything else rests on unique-name creation. It holds only
if nothing re-sends a commit later, as MLflow's client would for minutes: see model_registry.write_alias.

Basic auth: breaking a lock never touches the other user's object, so a lock left by a person's crashed
`headstart promote` is taken over by the pipeline's user once it expires. Each user needs READ on the
lock models (MLflow's default_permission READ gives it) and the right to create registered models;
deleting another user's old generations is skipped when not permitted.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headstart.errors import RegistryError

CLOCK_SKEW_S = 1.0
Call = Callable[..., Any]  # registry.retry(what, fn, attempts=...)
_unreleased: dict[str, str] = {}  # model -> our token, for locks this process failed to release
_DESCRIPTION = ("Headstart registry lock (one generation of it); it expires by itself if its holder died. "
                "See headstart/registry/lock.py.")


def lock_name(model: str, gen: int) -> str:
    return f"{model}.lock.{gen}"


@dataclass(frozen=True)
class Generation:
    gen: int
    owner: str
    user: str
    expires: float
    released: bool

    def free(self, model: str) -> bool:
        """Whether a waiter may take the lock from this (top) generation."""
        return (self.released or self.expires + CLOCK_SKEW_S < time.time()
                or self.owner == _unreleased.get(model) or _dead(self.owner))


def generations(c: Any, model: str, call: Call) -> list[Generation]:
    """Every generation of the lock on `model`, oldest first."""
    prefix = f"{model}.lock."

    def search() -> list[Any]:
        found, token = [], None
        while True:
            page = c.search_registered_models(filter_string=f"name LIKE '{prefix}%'", max_results=200,
                                              page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                return found

    out = []
    for rm in call("reading the registry lock", search):
        suffix = rm.name[len(prefix):] if rm.name.startswith(prefix) else ""
        if not suffix.isdigit():  # LIKE's _ and % match more than the prefix
            continue
        try:
            expires = float(rm.tags.get("expires", "inf"))
        except ValueError:
            expires = float("inf")
        out.append(Generation(gen=int(suffix), owner=rm.tags.get("owner", ""), user=rm.tags.get("user", ""),
                              expires=expires, released=rm.tags.get("state") == "released"))
    return sorted(out, key=lambda g: g.gen)


@dataclass
class Lease:
    """A held lock: the generation we own now, renewed by a heartbeat thread while the body runs."""

    c: Any
    model: str
    owner: str
    user: str
    ttl: float
    call: Call
    gen: int
    valid_until: float
    below: list[int] = field(default_factory=list)  # older generations to delete on release
    lost: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _mutex: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    @property
    def margin(self) -> float:
        """How long before the lease ends the holder stops acting: a request sent after check() must land
        within it, so it is also the most a commit request may wait for its answer."""
        return _margin(self.ttl)

    def check(self) -> None:
        """Raise unless the lease is still ours with time to spare: call it right before each commit request."""
        with self._mutex:
            if self.lost is None and time.time() >= self.valid_until:
                self.lost = f"its lease ran out at {time.ctime(self.valid_until)} (renewals failed)"
            if self.lost is not None:
                raise RegistryError(f"lost the registry lock {lock_name(self.model, self.gen)!r}: {self.lost}; "
                                    "nothing further was changed. Re-run to finish.")

    def start(self) -> None:
        if self.ttl > 0:
            self._thread = threading.Thread(target=self._beat, name=f"lock-heartbeat-{self.model}", daemon=True)
            self._thread.start()

    def _beat(self) -> None:
        wait = interval = self.ttl / 3
        while not self._stop.wait(wait):
            try:
                self._renew()
                wait = interval
            except RegistryError as exc:
                if self.lost is not None:
                    return
                wait = max(0.2, interval / 4)  # the server may be back soon; the lease still runs
                if time.time() >= self.valid_until:
                    with self._mutex:
                        self.lost = f"renewals failed until its lease ran out ({exc})"
                    return

    def _renew(self) -> None:
        nxt = self.gen + 1
        sent = time.time()
        if not _create(self.c, self.model, nxt, self.owner, self.user, sent + self.ttl, self.call):
            with self._mutex:
                self.lost = f"generation {nxt} was created by another holder, who judged this one expired"
            self._stop.set()
            return
        with self._mutex:
            old, self.gen, self.valid_until = self.gen, nxt, sent + self.ttl - self.margin
        _delete(self.c, self.model, [old], self.call)

    def release(self) -> None:
        """Stop renewing, then mark our generation released; on failure, remember it (module docstring)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:  # even when lost: marking our own generation released never harms (only the top counts)
            self.call("releasing the registry lock",
                      lambda: self.c.set_registered_model_tag(lock_name(self.model, self.gen), "state", "released"),
                      attempts=3)
            _unreleased.pop(self.model, None)
        except RegistryError as exc:
            if error_code(exc) not in {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}:
                _unreleased[self.model] = self.owner
            return
        _delete(self.c, self.model, self.below, self.call)


def acquire(c: Any, model: str, owner: str, user: str, ttl: float, timeout: float, call: Call) -> Lease:
    """Take the lock (module docstring), waiting up to `timeout` seconds for its holder."""
    deadline = time.monotonic() + timeout
    while True:
        gens = generations(c, model, call)
        top = gens[-1] if gens else None
        top_gen = top.gen if top is not None else 0
        if top is None or top.free(model):
            nxt = top_gen + 1
            sent = time.time()
            if _create(c, model, nxt, owner, user, sent + ttl, call):
                after = generations(c, model, call)
                if after and after[-1].gen == nxt:
                    return Lease(c=c, model=model, owner=owner, user=user, ttl=ttl, call=call, gen=nxt,
                                 valid_until=sent + ttl - _margin(ttl), below=[g.gen for g in after[:-1]])
                _delete(c, model, [nxt], call)  # a higher generation exists: ours re-used a deleted name
        if time.monotonic() > deadline:
            who = f"{top.owner} (user {top.user or '?'})" if top else "?"
            until = time.ctime(top.expires) if top and top.expires != float("inf") else "?"
            raise RegistryError(
                f"registry lock {lock_name(model, top_gen)!r} still held after {timeout:.0f}s by {who}, "
                f"lease until {until}; another run is promoting. A holder that died stops renewing, and its "
                "lease expires by itself: re-run after that.")
        time.sleep(0.2 + random.random() * 0.3)  # noqa: S311 - jitter, not crypto


def _create(c: Any, model: str, gen: int, owner: str, user: str, expires: float, call: Call) -> bool:
    """The CAS: create generation `gen` with our token; False if someone else holds that name."""
    name = lock_name(model, gen)
    try:
        call("taking the registry lock", lambda: c.create_registered_model(
            name, tags={"owner": owner, "user": user, "expires": repr(expires)}, description=_DESCRIPTION))
        return True
    except RegistryError as exc:
        if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise
    # a retried create whose first reply was lost also lands here: then the name is ours
    held = call("reading the registry lock", lambda: c.get_registered_model(name))
    return held.tags.get("owner") == owner


def _delete(c: Any, model: str, gens: list[int], call: Call) -> None:
    """Best-effort removal of generations below the top (another user's may not be ours to delete)."""
    for gen in gens:
        with contextlib.suppress(RegistryError):
            call("cleaning up the registry lock", lambda g=gen: c.delete_registered_model(lock_name(model, g)),
                 attempts=1)


def _margin(ttl: float) -> float:
    return min(ttl / 6, 10.0) if ttl > 0 else 0.0


NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}  # MLflow error codes for "not there"


def error_code(exc: BaseException) -> str | None:
    """The MLflow error code behind a RegistryError raised by registry.retry()."""
    return getattr(exc.__cause__, "error_code", None)


def host_id() -> str:
    """The host name plus the PID namespace: a pid names the same process only within both (pods that
    share a node's host name, with hostNetwork, still have PID namespaces of their own)."""
    try:
        ns = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{ns.removeprefix('pid:[').removesuffix(']')}"


def _dead(owner: str) -> bool:
    """Whether the lock's owner (`host:pid:nonce`) is a process on this host that no longer runs."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != host_id() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False
