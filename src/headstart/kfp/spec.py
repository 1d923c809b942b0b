"""Build and compile the pipeline that headstart.kfp.pipeline defines, from the installed package.

Nothing is read from the checkout but params.yaml: the spec is the same whatever the working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headstart.config import DEFAULT_PARAMS, load_params
from headstart.errors import ConfigError
from headstart.kfp.settings import PipelineSettings, settings_from_params

DEFAULT_PACKAGE = Path("pipelines/headstart_pipeline.yaml")


def build(params: dict[str, Any], settings: PipelineSettings) -> Any:
    """The @dsl.pipeline for these params and settings (a kfp GraphComponent)."""
    from headstart.kfp import pipeline  # imports kfp: only when a spec is built, not for `headstart --help`

    return pipeline.build(params, settings)


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
