"""The only place that writes to the MLflow model registry: register, tag, move aliases.

Aliases: `champion` is production; the version it left keeps `previous-champion`. The list of
champion versions is kept as a JSON tag on the registered model so rollbacks can go further back.
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
T = TypeVar("T")


def client(tracking: TrackingConfig):
    from mlflow import MlflowClient

    from headstart import tracking as trk

    trk.configure(tracking)
    return MlflowClient()


def retry(what: str, fn: Callable[[], T], attempts: int = 4, delay: float = 0.5) -> T:
    """Retry transient MLflow failures with backoff, then fail with a message that says what failed."""
    from mlflow.exceptions import MlflowException

    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or attempt == attempts:
                raise RegistryError(f"MLflow: {what} failed: {exc.message}") from exc
        except OSError as exc:
            if attempt == attempts:
                raise RegistryError(f"MLflow: {what} failed after {attempts} attempts: {exc}") from exc
        time.sleep(delay * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Champion:
    version: str
    run_id: str | None
    tags: dict[str, str]


def champion(tracking: TrackingConfig) -> Champion | None:
    """The version behind the `champion` alias, or None before the first promotion."""
    from mlflow.exceptions import MlflowException

    c = client(tracking)
    try:
        mv = c.get_model_version_by_alias(tracking.registered_model, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise RegistryError(
            f"MLflow: reading the champion of {tracking.registered_model!r} failed: {exc.message}"
        ) from exc
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
    c = client(tracking)
    try:
        rm = c.get_registered_model(tracking.registered_model)
    except Exception:  # noqa: BLE001 - no registered model yet means no history
        return []
    return json.loads(rm.tags.get(HISTORY_TAG, "[]"))


def _append_history(tracking: TrackingConfig, entry: dict[str, Any]) -> None:
    c = client(tracking)
    items = history(tracking)[-49:] + [entry]
    retry("recording champion history",
          lambda: c.set_registered_model_tag(tracking.registered_model, HISTORY_TAG, json.dumps(items)))


def set_version_tags(tracking: TrackingConfig, version: str, tags: dict[str, Any]) -> None:
    c = client(tracking)
    for key, value in tags.items():
        text = value if isinstance(value, str) else json.dumps(value)
        retry(f"tagging version {version} with {key}",
              lambda k=key, t=text: c.set_model_version_tag(tracking.registered_model, version, k, t[:5000]))


def move_champion(tracking: TrackingConfig, version: str, action: str, reason: str) -> str | None:
    """Point `champion` at `version`; the version it left becomes `previous-champion`. Returns that one."""
    c = client(tracking)
    name = tracking.registered_model
    current = champion(tracking)
    old = current.version if current else None
    if old == version:
        return old
    retry(f"setting alias {CHAMPION} -> v{version}", lambda: c.set_registered_model_alias(name, CHAMPION, version))
    if old is not None:
        retry(f"setting alias {PREVIOUS} -> v{old}", lambda: c.set_registered_model_alias(name, PREVIOUS, old))
    _append_history(tracking, {"version": version, "previous": old, "action": action, "reason": reason,
                               "by": current_user(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return old


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
def lock(tracking: TrackingConfig, owner: str | None = None, timeout: float = 120.0,
         ttl: float = 300.0) -> Iterator[str]:
    """Serialise alias moves across concurrent runs: MLflow has no transactions, but creating a
    registered model is atomic (unique name), so `<name>.lock` is a compare-and-set. A lock older
    than `ttl` seconds (its holder died) is broken."""
    from mlflow.exceptions import MlflowException

    c = client(tracking)
    name = f"{tracking.registered_model}.lock"
    me = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            c.create_registered_model(name, tags={"owner": me, "expires": str(time.time() + ttl)},
                                      description="Headstart registry lock; delete only if its holder died")
            break
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise RegistryError(f"MLflow: taking the registry lock failed: {exc.message}") from exc
        _break_if_stale(c, name)
        if time.monotonic() > deadline:
            raise RegistryError(f"registry lock {name!r} still held after {timeout:.0f}s; another run is "
                                f"promoting. If no run is, delete the registered model {name!r}.")
        time.sleep(0.2 + random.random() * 0.3)  # noqa: S311 - jitter, not crypto
    try:
        yield me
    finally:
        with contextlib.suppress(MlflowException):
            held = c.get_registered_model(name)
            if held.tags.get("owner") == me:
                c.delete_registered_model(name)


def _break_if_stale(c: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException, ValueError):
        held = c.get_registered_model(name)
        if float(held.tags.get("expires", "inf")) < time.time():
            c.delete_registered_model(name)


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
