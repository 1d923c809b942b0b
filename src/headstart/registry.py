"""The only place that writes to the MLflow model registry: register, tag, move aliases.

Aliases: `champion` is production; the version it left keeps `previous-champion`. The list of
champion versions is kept as a JSON tag on the registered model so rollbacks can go further back.

Nothing is half done, although MLflow has no transactions:
- A version is created in one request together with all its tags, `headstart.registration=pending` among
  them; `complete` replaces it only after the decision record is logged, as the last write before any
  alias move. Promotion refuses a pending version, and nothing reads versions other than the champion,
  so a version left pending by a failed run is ignored (it stays visible, tagged pending, for audit).
- An alias move is a commit point: the move's history entry is first written on the version as its
  `headstart.promotion` tag (the intent), then `champion` moves, then the bookkeeping that follows from it
  (`previous-champion`, the decision tag, the history entry, written last). A run that dies after the
  move leaves the champion fully registered; whoever next takes the registry lock (or starts a
  registration) finishes the bookkeeping from the intent, so a re-run repairs it.
Every MLflow call retries transient failures with backoff and then raises RegistryError naming what
failed; `stage()` marks each step so tests can stop the server right before any one of them.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import random
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from headstart.config import TrackingConfig
from headstart.errors import RegistryError

CHAMPION = "champion"
PREVIOUS = "previous-champion"
HISTORY_TAG = "headstart.champion_history"
REGISTRATION_TAG = "headstart.registration"  # "pending" at creation, "complete" once fully recorded
PROMOTION_TAG = "headstart.promotion"  # JSON: the history entry of the move to this version (the intent)
PENDING, COMPLETE = "pending", "complete"
_PERMANENT = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "NOT_FOUND",
              "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST"}
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}
T = TypeVar("T")
_stage_hook: Callable[[str], None] | None = None
_unreleased: dict[str, str] = {}  # lock name -> our owner id, for locks this process failed to delete


def stage(name: str) -> None:
    """Mark the start of a registry stage (e.g. "champion_alias"). A seam for fault-injection tests, which
    set `_stage_hook` to stop the server right before a given stage; nothing happens otherwise."""
    if _stage_hook is not None:
        _stage_hook(name)


def client(tracking: TrackingConfig):
    from mlflow import MlflowClient

    from headstart import tracking as trk

    retry("connecting to the tracking server", lambda: trk.configure(tracking))
    return MlflowClient()


def retry(what: str, fn: Callable[[], T], attempts: int = 4, delay: float = 0.5) -> T:
    """Retry transient MLflow failures (connection errors, 5xx, timeouts) with exponential backoff, then
    fail with a RegistryError that says what failed; errors that a retry cannot fix fail at once.

    MLflow's client also retries each HTTP request itself (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7,
    backoff MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR); lower those to bound the total wait."""
    from mlflow.exceptions import MlflowException

    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (MlflowException, OSError, RegistryError) as exc:  # requests' errors are OSErrors
            cause = exc.__cause__ if isinstance(exc, RegistryError) else exc  # tracking.configure wraps them
            if not isinstance(cause, MlflowException | OSError):
                raise
            message = cause.message if isinstance(cause, MlflowException) else str(cause)
            if getattr(cause, "error_code", None) in _PERMANENT:
                raise RegistryError(f"MLflow: {what} failed: {message}") from cause
            if attempt == attempts:
                raise RegistryError(f"MLflow: {what} failed after {attempts} attempts: {_short(message)}. "
                                    f"{_hint()}") from cause
        time.sleep(delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _short(text: str) -> str:
    return text if len(text) <= 400 else text[:400] + "..."


def _hint() -> str:
    import mlflow

    return (f"Is the tracking server at {mlflow.get_tracking_uri()} up and reachable? Re-run once it is: a "
            "version this run left unfinished is ignored, and a champion move it committed is completed.")


def error_code(exc: BaseException) -> str | None:
    """The MLflow error code behind a RegistryError raised by retry()."""
    cause = exc.__cause__
    return getattr(cause, "error_code", None)


@dataclass(frozen=True)
class Champion:
    version: str
    run_id: str | None
    tags: dict[str, str]


def champion(tracking: TrackingConfig) -> Champion | None:
    """The version behind the `champion` alias, or None before the first promotion."""
    c = client(tracking)
    try:
        mv = retry(f"reading the champion of {tracking.registered_model!r}",
                   lambda: c.get_model_version_by_alias(tracking.registered_model, CHAMPION))
    except RegistryError as exc:
        if error_code(exc) in _NOT_FOUND:
            return None
        raise
    return Champion(version=str(mv.version), run_id=mv.run_id, tags=dict(mv.tags))


def download_model_dir(tracking: TrackingConfig, version: str, dest: Path) -> Path:
    """Download a registered version and return the folder holding model.json + weights."""
    import mlflow

    from headstart.modelio import CARD_FILE

    client(tracking)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    uri = f"models:/{tracking.registered_model}/{version}"
    local = retry(f"downloading {uri}", lambda: mlflow.artifacts.download_artifacts(uri, dst_path=str(dest)))
    cards = sorted(Path(local).rglob(CARD_FILE))
    if not cards:
        raise RegistryError(f"{uri}: no {CARD_FILE} in the registered model; was it logged by Headstart?")
    return cards[0].parent


def champion_model_dir(tracking: TrackingConfig, dest: Path) -> tuple[Path, str] | None:
    current = champion(tracking)
    if current is None:
        return None
    return download_model_dir(tracking, current.version, dest), current.version


def history(tracking: TrackingConfig) -> list[dict[str, Any]]:
    """The champion history; [] before the first registration. A server error raises: an empty history
    read from a failing server must never be written back over the real one."""
    c = client(tracking)
    try:
        rm = retry("reading the champion history", lambda: c.get_registered_model(tracking.registered_model))
    except RegistryError as exc:
        if error_code(exc) in _NOT_FOUND:
            return []
        raise
    return json.loads(rm.tags.get(HISTORY_TAG, "[]"))


def _append_history(tracking: TrackingConfig, entry: dict[str, Any]) -> None:
    c = client(tracking)
    items = history(tracking)
    if items and items[-1] == entry:
        return  # already recorded (a retried or repaired move)
    items = items[-49:] + [entry]
    retry("recording champion history",
          lambda: c.set_registered_model_tag(tracking.registered_model, HISTORY_TAG, json.dumps(items)))


def create_version(tracking: TrackingConfig, model_uri: str, tags: dict[str, str]) -> str:
    """Register `model_uri` as a new version, created in one request with all its tags and marked pending."""
    import mlflow

    client(tracking)
    stage("create_version")
    mv = retry(f"registering {model_uri} as a version of {tracking.registered_model!r}",
               lambda: mlflow.register_model(model_uri, tracking.registered_model,
                                             tags={**tags, REGISTRATION_TAG: PENDING}))
    return str(mv.version)


def set_version_tags(tracking: TrackingConfig, version: str, tags: dict[str, Any]) -> None:
    c = client(tracking)
    for key, value in tags.items():
        text = value if isinstance(value, str) else json.dumps(value)
        retry(f"tagging version {version} with {key}",
              lambda k=key, t=text: c.set_model_version_tag(tracking.registered_model, version, k, t[:5000]))


def mark_complete(tracking: TrackingConfig, version: str) -> None:
    """The last write of a registration, before any alias move: the version is fully recorded."""
    stage("complete")
    set_version_tags(tracking, version, {REGISTRATION_TAG: COMPLETE})


def require_complete(tracking: TrackingConfig, version: str) -> None:
    """Refuse to promote a version whose registration did not finish (tagged pending)."""
    c = client(tracking)
    mv = retry(f"reading version {version}", lambda: c.get_model_version(tracking.registered_model, version))
    if mv.tags.get(REGISTRATION_TAG) == PENDING:
        raise RegistryError(f"{tracking.registered_model} v{version}: its registration did not finish "
                            f"({REGISTRATION_TAG}={PENDING}); it cannot be promoted. Re-run `headstart register`.")


def move_champion(tracking: TrackingConfig, version: str, action: str, reason: str) -> str | None:
    """Point `champion` at `version`; the version it left becomes `previous-champion`. Returns that one.

    Call under lock(). The intent is written first, the alias move is the commit, then the bookkeeping."""
    c = client(tracking)
    name = tracking.registered_model
    current = champion(tracking)
    old = current.version if current else None
    if old == version:
        return old
    entry = {"version": version, "previous": old, "action": action, "reason": reason,
             "by": current_user(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    stage("promotion_intent")
    set_version_tags(tracking, version, {PROMOTION_TAG: json.dumps(entry)})
    stage("champion_alias")
    retry(f"setting alias {CHAMPION} -> v{version}", lambda: c.set_registered_model_alias(name, CHAMPION, version))
    _finish_move(tracking, entry)
    return old


def _finish_move(tracking: TrackingConfig, entry: dict[str, Any]) -> None:
    """What follows from a committed move; idempotent, so a later run can redo it from the intent."""
    version, old = entry["version"], entry["previous"]
    if old is not None:
        stage("previous_alias")
        set_previous(tracking, old)
    if entry["action"] == "promote":
        stage("decision_tag")
        set_version_tags(tracking, version, {"decision": "promoted", "decision_reason": entry["reason"][:250]})
    stage("history")
    _append_history(tracking, entry)


def pending_move(tracking: TrackingConfig) -> dict[str, Any] | None:
    """The champion's move when its bookkeeping was not finished (the history lacks it), else None."""
    current = champion(tracking)
    raw = current.tags.get(PROMOTION_TAG) if current else None
    if not current or not raw:
        return None
    entry = json.loads(raw)
    if entry.get("version") != current.version:
        return None
    items = history(tracking)
    return None if items and items[-1] == entry else entry


def repair(tracking: TrackingConfig) -> dict[str, Any] | None:
    """Finish a committed move whose run died before recording it; returns the entry it finished."""
    if pending_move(tracking) is None:
        return None
    with lock(tracking):  # lock() finishes it
        return None if pending_move(tracking) else _last(tracking)


def _last(tracking: TrackingConfig) -> dict[str, Any] | None:
    items = history(tracking)
    return items[-1] if items else None


def set_previous(tracking: TrackingConfig, version: str | None) -> None:
    """Point `previous-champion` at `version`, or remove the alias when there is none."""
    c = client(tracking)
    name = tracking.registered_model
    if version is None:
        with contextlib.suppress(Exception):
            c.delete_registered_model_alias(name, PREVIOUS)
        return
    retry(f"setting alias {PREVIOUS} -> v{version}", lambda: c.set_registered_model_alias(name, PREVIOUS, version))


@contextlib.contextmanager
def lock(tracking: TrackingConfig, owner: str | None = None, timeout: float = 200.0,
         ttl: float = 180.0) -> Iterator[str]:
    """Serialise alias moves across concurrent runs: MLflow has no transactions, but creating a
    registered model is atomic (unique name), so `<name>.lock` is a compare-and-set. A lock is broken
    when older than `ttl` seconds, when its holder is a dead process on this host, or when this process
    holds it from a run whose release failed; `timeout` > `ttl`, so a re-run waits out the lock of a run
    that died holding it instead of failing. Taking the lock first finishes a committed move that its
    run could not record (see the module docstring)."""
    c = client(tracking)
    name = f"{tracking.registered_model}.lock"
    me = owner or f"{_host_id()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    stage("lock")
    while True:
        try:
            retry("taking the registry lock", lambda: c.create_registered_model(
                name, tags={"owner": me, "expires": str(time.time() + ttl)},
                description="Headstart registry lock; delete only if its holder died"))
            break
        except RegistryError as exc:
            if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
        if _holder(c, name) == me:  # an earlier attempt got through but its reply was lost
            break
        _break_if_stale(c, name)
        if time.monotonic() > deadline:
            raise RegistryError(f"registry lock {name!r} still held after {timeout:.0f}s; another run is "
                                f"promoting. If no run is, delete the registered model {name!r}.")
        time.sleep(0.2 + random.random() * 0.3)  # noqa: S311 - jitter, not crypto
    try:
        entry = pending_move(tracking)
        if entry is not None:
            _finish_move(tracking, entry)
        yield me
    finally:
        stage("unlock")
        _release(c, name, me)


def _holder(c: Any, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException, OSError):
        return c.get_registered_model(name).tags.get("owner")
    return None


def _release(c: Any, name: str, me: str) -> None:
    """Delete the lock if it is still ours; if the server is down, remember it so that this process
    breaks it when it next takes the lock (another host waits for it to expire)."""
    try:
        held = retry("reading the registry lock", lambda: c.get_registered_model(name), attempts=3)
        if held.tags.get("owner") == me:
            retry("releasing the registry lock", lambda: c.delete_registered_model(name), attempts=3)
        _unreleased.pop(name, None)
    except RegistryError as exc:
        if error_code(exc) in _NOT_FOUND:
            _unreleased.pop(name, None)
        else:
            _unreleased[name] = me


def _break_if_stale(c: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException, OSError, ValueError):
        held = c.get_registered_model(name)
        owner = held.tags.get("owner", "")
        if float(held.tags.get("expires", "inf")) < time.time() or owner == _unreleased.get(name) or _dead(owner):
            c.delete_registered_model(name)
            _unreleased.pop(name, None)


def _host_id() -> str:
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
    if host != _host_id() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
