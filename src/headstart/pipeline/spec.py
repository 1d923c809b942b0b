"""Build and compile the pipeline defined in pipelines/headstart_pipeline.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from headstart.config import DEFAULT_PARAMS, load_params
from headstart.errors import ConfigError
from headstart.pipeline.settings import PipelineSettings, settings_from_params

PIPELINE_FILE = Path("pipelines/headstart_pipeline.py")
DEFAULT_PACKAGE = Path("pipelines/headstart_pipeline.yaml")


def project_root(start: Path | None = None) -> Path:
    """The checkout holding pipelines/ and components/: the current folder or a parent, else the package's."""
    here = (start or Path.cwd()).resolve()
    import headstart

    for folder in (here, *here.parents, Path(headstart.__file__).resolve().parents[2]):
        if (folder / PIPELINE_FILE).is_file() and (folder / "components").is_dir():
            return folder
    raise ConfigError(f"{PIPELINE_FILE} not found from {here}: run this from the Headstart repository")


def load_definition(root: Path | None = None) -> ModuleType:
    """Import pipelines/headstart_pipeline.py; its `components` imports resolve from the repository root."""
    root = root or project_root()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    spec = importlib.util.spec_from_file_location("headstart_pipeline_definition", root / PIPELINE_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(params: dict[str, Any], settings: PipelineSettings) -> Any:
    """The @dsl.pipeline for these params and settings (a kfp GraphComponent)."""
    return load_definition().build(params, settings)


def compile(  # noqa: A001 - the verb people type: `headstart pipeline compile`
    image: str | None = None,
    out: Path = DEFAULT_PACKAGE,
    *,
    gpu_image: str | None = None,
    params_file: Path = DEFAULT_PARAMS,
    overrides: list[str] | None = None,
    **settings: Any,
) -> Path:
    """Write the pipeline spec YAML; `image` and `gpu_image` (default `<image>-cuda`) are the images."""
    from kfp import compiler

    params = load_params(params_file, overrides)
    resolved = settings_from_params(params, image=image, gpu_image=gpu_image, **settings)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build(params, resolved), str(out))
    return out


def root_inputs(package: Path) -> dict[str, Any]:
    """The run parameters a compiled package declares, with their defaults."""
    import yaml

    if not package.is_file():
        raise ConfigError(f"{package}: pipeline package not found; run `headstart pipeline compile` first")
    spec = next(iter(yaml.safe_load_all(package.read_text())), None) or {}  # 2nd document: platform spec
    params = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: p.get("defaultValue") for name, p in params.items()}


def check_arguments(package: Path, arguments: dict[str, Any]) -> None:
    known = root_inputs(package)
    unknown = sorted(set(arguments) - set(known))
    if unknown:
        raise ConfigError(
            f"{package}: no run parameter {', '.join(unknown)}; the pipeline takes: {', '.join(known)}"
        )
