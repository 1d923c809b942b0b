"""The only place that writes to the MLflow model registry: register, tag, move aliases.

Aliases: `champion` is production; `previous-champion` is the version a rollback would return to.

The champion history is one registered-model tag per move, `headstart.history.<seq>` (a JSON entry
of a few hundred characters), so it cannot outgrow the backend's 5000-character tag column (one JSON
list in one tag did, on PostgreSQL and MySQL, after about 31 moves). The newest HISTORY_KEEP moves are
kept; each version also keeps the entry of its own latest move in `headstart.promotion`. The single
`headstart.champion_history` tag that older releases wrote is still read, as the oldest entries.

Each entry records the move (`version`, `previous`: the version it left, `action`, `reason`, `by`,
`at`) and where a rollback from the state it made goes: `back_to` (a version) and `undo` (the `seq` of
the entry that made that state). A promotion or override pushes: `back_to` is the champion it replaced.
A rollback pops: it returns to `back_to` and copies that state's own `back_to`/`undo`, so repeated
rollbacks walk back along the promotions (v1 -> v2 -> v3, rollback, rollback: v1), never forth,
as far back as the kept history reaches.

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
- Moves happen under the registry lock (headstart.registry.lock: a lease with a compare-and-set on
  unique names, renewed while held), and an alias write is never re-sent without the lease (write_alias).
Every other MLflow call retries transient failures with backoff and then raises RegistryError naming what
failed; `stage()` marks each step so tests can stop the server right before any one of them.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from headstart.config import TrackingConfig
from headstart.errors import RegistryError
from headstart.evaluation.gate import SCHEDULE_TAG, ScheduleState  # the window state, as JSON on the registered model
from headstart.registry import lock as registry_lock
from headstart.registry.lock import NOT_FOUND as _NOT_FOUND
from headstart.registry.lock import error_code

PREVIOUS = "previous-champion"
HISTORY_TAG = "headstart.champion_history"  # the single JSON tag of older releases; read, never written
HISTORY_PREFIX = "headstart.history."  # + zero-padded seq: one tag per move
HISTORY_KEEP = 100
REASON_CHARS = 1000  # an entry stays far below the 5000-character tag column
REGISTRATION_TAG = "headstart.registration"  # "pending" at creation, "complete" once fully recorded
PROMOTION_TAG = "headstart.promotion"  # JSON: the history entry of the move to this version (the intent)
PENDING, COMPLETE = "pending", "complete"
COUNTED_TAG = "headstart.gate_counted"  # on a version: its judged run is counted in the schedule (counted once)
CHAMPION = "champion"  # the alias; champion_ref names it too, without importing this (mlflow) module
_PERMANENT = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "RESOURCE_ALREADY_EXISTS", "NOT_FOUND",
              "PERMISSION_DENIED", "UNAUTHENTICATED", "BAD_REQUEST"}
COMMIT_TIMEOUT_S = 10.0  # an alias write's timeout when no lease is held (under one: its margin)
T = TypeVar("T")
_stage_hook: Callable[[str], None] | None = None
_configured: set[tuple[str, str]] = set()  # (uri, experiment) that tracking.configure has set up here
_leases: dict[str, list[registry_lock.Lease]] = {}  # model -> the leases this process holds, innermost last


def stage(name: str) -> None:
    """A seam for fault-injection tests (module docstring): calls `_stage_hook`, when set, with the stage."""
    if _stage_hook is not None:
        _stage_hook(name)


def client(tracking: TrackingConfig, read_only: bool = False):
    """An MlflowClient on the store, the experiment set up on first use. `read_only` (status) only points MLflow
    at the store, creating no experiment or artifact folder; later calls in this process reuse that."""
    import mlflow
    from mlflow import MlflowClient

    from headstart import tracking as trk

    key = (tracking.resolved_uri(), tracking.experiment)
    if key in _configured or read_only:  # the registry needs only the URI; the experiment was checked once already
        mlflow.set_tracking_uri(key[0])
    else:
        retry("connecting to the tracking server", lambda: trk.configure(tracking))
    _configured.add(key)
    return MlflowClient()


def check_reachable(tracking: TrackingConfig, timeout: float = 10.0) -> None:
    """Fail fast, naming the URI, when an http(s) tracking server does not answer at all; MLflow's own
    retries would otherwise spend minutes on a closed port before saying anything."""
    uri = tracking.resolved_uri()
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):  # noqa: S310 - http(s) only
            return
    except urllib.error.HTTPError:
        return  # it answered (a proxy or auth in front of it may refuse /health): reachable
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryError(f"cannot reach the MLflow tracking server at {uri} ({reason}). Start it, or point "
                            "tracking.tracking_uri in params.yaml (or MLFLOW_TRACKING_URI) at the right "
                            "one.") from exc


def retry(what: str, fn: Callable[[], T], attempts: int = 4) -> T:
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
                raise RegistryError(_gave_up(what, attempts, message)) from cause
        time.sleep(0.5 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _gave_up(what: str, attempts: int, message: str) -> str:
    import mlflow

    short = message if len(message) <= 400 else message[:400] + "..."
    return (f"MLflow: {what} failed after {attempts} attempts: {short}. Is the tracking server at "
            f"{mlflow.get_tracking_uri()} up and reachable? Re-run once it is: a version this run left unfinished "
            "is ignored, and a champion move it committed is completed.")


def _unless_missing(what: str, fn: Callable[[], T], missing: set[str] = _NOT_FOUND) -> T | None:
    """retry(what, fn), or None when what it reads does not exist (an error code in `missing`)."""
    try:
        return retry(what, fn)
    except RegistryError as exc:
        if error_code(exc) in missing:
            return None
        raise


@dataclass(frozen=True)
class Champion:
    version: str
    run_id: str | None
    tags: dict[str, str]


def champion(tracking: TrackingConfig) -> Champion | None:
    """The version behind the `champion` alias, or None before the first promotion."""
    c, name = client(tracking), tracking.registered_model
    try:
        mv = _unless_missing(f"reading the champion of {name!r}", lambda: c.get_model_version_by_alias(name, CHAMPION))
    except RegistryError as exc:
        if error_code(exc) == "PERMISSION_DENIED" and not exists(f"reading {name!r}",
                                                                  lambda: c.get_registered_model(name)):
            return None  # basic auth answers 403, not 404, for an alias of a model that does not exist yet
        raise
    return None if mv is None else Champion(version=str(mv.version), run_id=mv.run_id, tags=dict(mv.tags))


def exists(what: str, fn: Callable[[], Any]) -> bool:
    """retry(what, fn); False when what fn reads (and returns) does not exist (RESOURCE_DOES_NOT_EXIST only)."""
    return _unless_missing(what, fn, {"RESOURCE_DOES_NOT_EXIST"}) is not None


def champion_model_dir(tracking: TrackingConfig, dest: Path) -> tuple[Path, str] | None:
    """Download the champion into `dest`: (the folder holding model.json + weights, its version), or None
    before the first promotion."""
    import mlflow

    from headstart.models.modelio import CARD_FILE

    current = champion(tracking)
    if current is None:
        return None
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    uri = f"models:/{tracking.registered_model}/{current.version}"
    local = retry(f"downloading {uri}", lambda: mlflow.artifacts.download_artifacts(uri, dst_path=str(dest)))
    cards = sorted(Path(local).rglob(CARD_FILE))
    if not cards:
        raise RegistryError(f"{uri}: no {CARD_FILE} in the registered model; was it logged by Headstart?")
    return cards[0].parent, current.version


def history(tracking: TrackingConfig) -> list[dict[str, Any]]:
    """The champion history, oldest first; [] before the first registration. A server error raises: an
    empty history read from a failing server must never be mistaken for the real one."""
    return _read_history(tracking)[0]


def _read_history(tracking: TrackingConfig) -> tuple[list[dict[str, Any]], list[int]]:
    """The entries, and the seqs of the per-move tags holding them (oldest first)."""
    c = client(tracking)
    rm = _unless_missing("reading the champion history", lambda: c.get_registered_model(tracking.registered_model))
    tags = {} if rm is None else rm.tags
    legacy = json.loads(tags.get(HISTORY_TAG, "[]"))
    moves = sorted((int(k.removeprefix(HISTORY_PREFIX)), v) for k, v in tags.items()
                   if k.startswith(HISTORY_PREFIX) and k.removeprefix(HISTORY_PREFIX).isdigit())
    return legacy + [json.loads(v) for _, v in moves], [seq for seq, _ in moves]


def _history_key(seq: int) -> str:
    return f"{HISTORY_PREFIX}{seq:08d}"


def _matches(recorded: dict[str, Any], entry: dict[str, Any]) -> bool:
    """Whether `recorded` is `entry` (an intent from an older release has no seq: compare what it has)."""
    return all(recorded.get(k) == v for k, v in entry.items())


def _append_history(tracking: TrackingConfig, entry: dict[str, Any],
                    known: tuple[list[dict[str, Any]], list[int]] | None = None) -> None:
    """Record `entry` unless it is the last one already; `known` is the history as just read under the lock."""
    c = client(tracking)
    items, seqs = known or _read_history(tracking)
    if items and _matches(items[-1], entry):
        return  # already recorded (a retried or repaired move)
    seq = entry.get("seq") or max(seqs, default=0) + 1  # an intent of an older release has no seq
    retry("recording champion history", lambda: c.set_registered_model_tag(
        tracking.registered_model, _history_key(seq), json.dumps(entry)))
    for old in [*seqs, seq][:-HISTORY_KEEP]:
        with contextlib.suppress(RegistryError):
            retry("pruning the champion history", lambda s=old: c.delete_registered_model_tag(
                tracking.registered_model, _history_key(s)), attempts=2)


def _made_by(items: list[dict[str, Any]], entry: dict[str, Any]) -> dict[str, Any] | None:
    """The entry that made the state a rollback from `entry`'s state returns to; None if none (or pruned)."""
    if "undo" in entry:
        return next((h for h in items if entry["undo"] is not None and h.get("seq") == entry["undo"]), None)
    # an entry of an older release: the newest earlier entry that made its back_to version champion
    target, before = _back_to(entry), items[:next((i for i, h in enumerate(items) if h is entry), len(items))]
    return next((h for h in reversed(before) if h["version"] == target), None)


def _back_to(entry: dict[str, Any]) -> str | None:
    return entry.get("back_to", entry.get("previous"))


def rollback_plan(items: list[dict[str, Any]], current: str) -> tuple[str, dict[str, Any]] | None:
    """Where a rollback from champion `current` goes: (target version, the new entry's back_to/undo), or
    None when the history holds no earlier champion to return to."""
    made = next((h for h in reversed(items) if h["version"] == current), None)
    target = _back_to(made) if made else None
    if target is None:
        return None
    below = _made_by(items, made) or {"undo": None}  # none: nothing to roll back to after this one
    if "undo" not in below:  # made by an older release: the next rollback finds its state by position
        return target, {"back_to": _back_to(below)}
    return target, {"back_to": _back_to(below), "undo": below["undo"]}


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


def describe(tracking: TrackingConfig, version: str, text: str, model_text: str) -> None:
    """The version's description (from its decision) and, while it has none, the registered model's: what
    the MLflow UI shows first. Written before `complete`, so a failure leaves the version pending."""
    c, name = client(tracking), tracking.registered_model
    stage("description")
    retry(f"describing version {version}", lambda: c.update_model_version(name, version, description=text[:5000]))
    if not retry(f"reading {name!r}", lambda: c.get_registered_model(name)).description:
        retry(f"describing {name!r}", lambda: c.update_registered_model(name, description=model_text[:5000]))


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


def move_champion(tracking: TrackingConfig, version: str, action: str, reason: str,
                  rollback: dict[str, Any] | None = None) -> str | None:
    """Point `champion` at `version`; `previous-champion` follows the history. Returns the version it left.

    Call under lock(). The intent is written first, the alias move is the commit, then the bookkeeping.
    A promotion or override pushes onto the history; `rollback` (from rollback_plan) makes it a pop."""
    current = champion(tracking)
    old = current.version if current else None
    if old == version:
        return old
    items, seqs = _read_history(tracking)
    if rollback is None:  # the entry that made `old` champion; one without seq (an older release's): found by position
        made = items[-1] if items and old is not None and items[-1]["version"] == old else {"seq": None}
        rollback = {"back_to": old, "undo": made["seq"]} if "seq" in made else {"back_to": old}
    entry = {"seq": max(seqs, default=0) + 1, "version": version, "previous": old, **rollback, "action": action,
             "reason": reason[:REASON_CHARS], "by": current_user(),
             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    stage("promotion_intent")
    set_version_tags(tracking, version, {PROMOTION_TAG: entry})
    stage("champion_alias")
    write_alias(client(tracking), tracking.registered_model, CHAMPION, version)
    _finish_move(tracking, entry, (items, seqs))
    return old


def read_schedule(tracking: TrackingConfig) -> ScheduleState:
    """The gate's schedule state (headstart.evaluation.gate.ScheduleState), kept beside the champion so it survives a
    restarted pipeline and is shared by every pipeline on this model; fresh before the first judged run.
    A corrupt tag raises RegistryError naming the model and how to reset it; a failing server raises too."""
    return ScheduleState.from_json(schedule_text(tracking), tracking.registered_model)


def schedule_text(tracking: TrackingConfig) -> str | None:
    """The schedule tag as stored (None: none yet); only a failing server raises."""
    c = client(tracking)
    rm = _unless_missing("reading the gate schedule", lambda: c.get_registered_model(tracking.registered_model))
    return None if rm is None else rm.tags.get(SCHEDULE_TAG)


def write_schedule(tracking: TrackingConfig, state: ScheduleState) -> None:
    """Write the schedule state. Only under lock(): two pipelines counting at once must each see the
    other's count, so each re-reads and writes it while holding the lock."""
    model = tracking.registered_model
    if not _leases.get(model):
        raise RegistryError(f"{model}: the gate schedule ({SCHEDULE_TAG}) is written only under the registry lock")
    _check_lease(model)
    c = client(tracking)
    stage("gate_schedule")
    retry("recording the gate schedule", lambda: c.set_registered_model_tag(model, SCHEDULE_TAG, state.to_json()))


def count_run(tracking: TrackingConfig, version: str, alpha_run: float, horizon_runs: int) -> ScheduleState:
    """Count version's judged run in the schedule (call under lock()); returns the state now recorded.

    Counted once per version, so a re-run of promote does not spend the budget twice. The schedule is
    written before the version's mark: a run that dies between the two is counted again by its re-run,
    which spends more of the budget, never less."""
    c, name = client(tracking), tracking.registered_model
    mv = retry(f"reading {name} v{version}", lambda: c.get_model_version(name, version))
    state = read_schedule(tracking)
    if COUNTED_TAG in mv.tags:
        return state
    state = state.after_run(alpha_run, horizon_runs)
    write_schedule(tracking, state)
    set_version_tags(tracking, version, {COUNTED_TAG: {"window": state.window, "run": state.window_runs}})
    return state


def reset_schedule(tracking: TrackingConfig, reason: str) -> ScheduleState:
    """A person moved the champion (call under lock()): open a fresh window, recording why. A corrupt state is
    replaced, since this is how a person resets it."""
    text = schedule_text(tracking)  # a failing server raises here
    try:
        state = ScheduleState.from_json(text, tracking.registered_model)
    except RegistryError:  # the tag's content is corrupt: this reset replaces it
        state = ScheduleState()
    state = state.reset(reason[:REASON_CHARS], state.horizon_runs)
    write_schedule(tracking, state)
    return state


def _check_lease(model: str) -> float:
    """Right before a commit request: the registry lock this process holds for `model`, if any, is still
    ours. Returns how long that request may wait for its answer (the lease's margin)."""
    held = _leases.get(model)
    if not held:
        return COMMIT_TIMEOUT_S
    held[-1].check()
    return held[-1].margin or COMMIT_TIMEOUT_S


def write_alias(c: Any, name: str, alias: str, version: str | None, attempts: int = 4) -> None:
    """Point `alias` at `version` (None: remove it), re-checking the lease before each attempt.

    Each attempt is one request with no client-side retries and a timeout inside the lease's margin:
    MLflow's own retries (7, 120 s each) would re-send it minutes later, after the lease ran out and another
    run promoted, silently undoing that promotion. After each attempt, answered or not, the alias is read
    back: an unanswered request may have landed, and a retry is sent only if it did not."""
    from mlflow.exceptions import MlflowException

    what = f"setting alias {alias} -> v{version}" if version else f"removing alias {alias}"
    for attempt in range(1, attempts + 1):
        timeout = _check_lease(name)
        failure: BaseException | None = None
        try:
            _alias_request(c, name, alias, version, timeout)
        except (MlflowException, OSError) as exc:
            code = getattr(exc, "error_code", None)
            if code in _PERMANENT and not (version is None and code in _NOT_FOUND):  # removing: read back
                raise RegistryError(f"MLflow: {what} failed: {getattr(exc, 'message', exc)}") from exc
            failure = exc
        mv = _unless_missing(f"reading alias {alias} of {name!r}", lambda: c.get_model_version_by_alias(name, alias))
        now = None if mv is None else str(mv.version)
        if now == version:
            return
        if failure is None:
            raise RegistryError(f"{name}: alias {alias} reads v{now} right after {what}: another run moved it "
                                "meanwhile, so this run's registry lock was not respected. Check `headstart status`.")
        if attempt == attempts:
            message = getattr(failure, "message", None) or str(failure)
            raise RegistryError(_gave_up(what, attempts, message)) from failure
        time.sleep(0.5 * 2 ** (attempt - 1))


def _alias_request(c: Any, name: str, alias: str, version: str | None, timeout: float) -> None:
    """One request to set or delete the alias: no client-side retries, at most `timeout` per socket wait."""
    store = c._get_registry_client().store
    if not hasattr(store, "get_host_creds"):  # a database in this process: no network, nothing re-sent
        if version is None:
            c.delete_registered_model_alias(name, alias)
        else:
            c.set_registered_model_alias(name, alias, version)
        return
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    endpoint = "/api/2.0/mlflow/registered-models/alias"
    body = {"name": name, "alias": alias, **({"version": str(version)} if version is not None else {})}
    response = http_request(store.get_host_creds(), endpoint, "POST" if version is not None else "DELETE",
                            max_retries=0, timeout=timeout, json=body)
    verify_rest_response(response, endpoint)


def _finish_move(tracking: TrackingConfig, entry: dict[str, Any],
                 known: tuple[list[dict[str, Any]], list[int]] | None = None) -> None:
    """What follows from a committed move; idempotent, so a later run can redo it from the intent."""
    version, back_to = entry["version"], _back_to(entry)
    if back_to is not None or entry.get("previous") is not None:
        stage("previous_alias")  # points at back_to, or is removed when there is none
        write_alias(client(tracking), tracking.registered_model, PREVIOUS, back_to)
    if entry["action"] == "promote":
        stage("decision_tag")
        set_version_tags(tracking, version, {"decision": "promoted", "decision_reason": entry["reason"][:250]})
    stage("history")
    _append_history(tracking, entry, known)


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
    return None if items and _matches(items[-1], entry) else entry


def repair(tracking: TrackingConfig) -> dict[str, Any] | None:
    """Finish a committed move whose run died before recording it; returns the entry it finished."""
    if pending_move(tracking) is None:
        return None
    with lock(tracking):  # lock() finishes it
        items = [] if pending_move(tracking) else history(tracking)
        return items[-1] if items else None


@contextlib.contextmanager
def lock(tracking: TrackingConfig, owner: str | None = None, timeout: float = 120.0,
         ttl: float = 60.0) -> Iterator[str]:
    """Serialise alias moves across concurrent runs, hosts and users: a lease of `ttl` seconds, renewed while
    the body runs (headstart.registry.lock says when a waiter may break it and why that is safe). `timeout` >
    `ttl`, so a re-run waits out the lock of a run that died holding it. Taking the lock first finishes a
    committed move that its run could not record (module docstring)."""
    c = client(tracking)
    model = tracking.registered_model
    me = owner or f"{registry_lock.host_id()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    stage("lock")
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or current_user()
    lease = registry_lock.acquire(c, model, me, user, ttl, timeout, retry)
    lease.start()
    _leases.setdefault(model, []).append(lease)
    try:
        entry = pending_move(tracking)
        if entry is not None:
            _finish_move(tracking, entry)
        yield me
    finally:
        _leases[model].remove(lease)
        stage("unlock")
        lease.release()


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
