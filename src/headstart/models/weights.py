"""State-dict files: read safely, check against a model, save and load with safetensors.

Trained models are stored and served as safetensors, never pickles. Pre-trained `.pt`/`.pth` files
are read with `torch.load(weights_only=True)` only, so a file cannot run code when it is opened.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from headstart import storage
from headstart.errors import StorageError, WeightsError

SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_WRAPPERS = ("state_dict", "model", "model_state_dict")
_SHOW = 5

StateDict = dict[str, torch.Tensor]


def is_weights_file(spec: str) -> bool:
    """Whether a `weights` value names a file (local or s3) rather than a weights name."""
    return storage.is_s3(spec) or Path(spec).suffix in SUFFIXES or "/" in spec or "\\" in spec or Path(spec).exists()


def read_state_dict(path: Path, source: str | None = None) -> StateDict:
    """Read a state_dict from .safetensors or (weights-only) .pt/.pth; `source` names it in errors."""
    source = source or str(path)
    if path.suffix not in SUFFIXES:
        raise WeightsError(f"{source}: unsupported weights file type; use one of {', '.join(SUFFIXES)}.")
    try:
        if path.suffix == ".safetensors":
            state: object = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{source}: refused, it pickles Python objects other than tensors, which could run code when "
            "loaded (torch.load weights_only=True rejected it). Only plain state_dicts are accepted: "
            "re-save it from a trusted copy with torch.save(model.state_dict(), ...) or as .safetensors."
        ) from exc
    except (RuntimeError, SafetensorError, OSError, EOFError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise WeightsError(
            f"{source}: unreadable as a state_dict ({type(exc).__name__}: {reason}); check the file is "
            "complete and was written by torch.save(model.state_dict(), ...) or safetensors."
        ) from exc
    if isinstance(state, Mapping):
        for key in _WRAPPERS:  # training checkpoints often nest the weights one level down
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{source}: not a state_dict (a mapping of parameter names to tensors).")
    return dict(state)


def fetch_state_dict(spec: str) -> StateDict:
    """Read the state_dict named by a local path or s3:// URI (downloaded to a temporary folder)."""
    if not storage.is_s3(spec) and not Path(spec).is_file():
        raise WeightsError(f"{spec}: weights file not found; check the path, or use 'imagenet' or 'none'.")
    with tempfile.TemporaryDirectory(prefix="headstart-weights-") as tmp:
        try:
            path = storage.fetch(spec, Path(tmp))
        except StorageError as exc:
            raise WeightsError(f"could not fetch weights: {exc}") from exc
        return read_state_dict(path, source=spec)


def in_prefixes(name: str, prefixes: Iterable[str]) -> bool:
    """True if a parameter name lies under one of the module prefixes (e.g. "fc" -> "fc.weight")."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_checked(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str, skip: Iterable[str] = ()
) -> None:
    """Load `state` strictly, except keys under `skip` (a head about to be replaced) are ignored."""
    skip = list(skip)
    own = {k: v for k, v in model.state_dict().items() if not in_prefixes(k, skip)}
    given = {k: v for k, v in state.items() if not in_prefixes(k, skip)}
    problems = []
    if missing := sorted(own.keys() - given.keys()):
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected := sorted(given.keys() - own.keys()):
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if shapes := [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in given.items()
                  if k in own and v.shape != own[k].shape]:
        problems.append(f"wrong shapes (file != model): {_listed(shapes)}")
    if problems:
        raise WeightsError(
            f"{source}: weights do not fit {type(model).__name__}: {'; '.join(problems)}. "
            "Check the file was saved from the same architecture (and in_channels)."
        )
    model.load_state_dict(given, strict=False)


def save_weights(model: nn.Module, path: Path | str) -> Path:
    """Write the model's state_dict as safetensors (no pickle), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


def load_weights(model: nn.Module, path: Path | str) -> nn.Module:
    """Load a safetensors (or weights-only .pt) file into `model`, every key and shape checked."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; check the path.")
    load_checked(model, read_state_dict(path), str(path))
    return model
