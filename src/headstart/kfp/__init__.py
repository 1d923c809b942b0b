"""The Kubeflow Pipelines driver: the pipeline, its components, and compiling, running and scheduling it.

`pipeline` is the @dsl.pipeline (wiring only), `components` the lightweight components, each a signature and
one call into `bodies`; the spec is compiled from this installed package (`spec`), images and pool settings
chosen at compile time (`settings`). `local` runs it with kfp.local, `remote` submits and schedules it.
Inside this package `import kfp` is still the kfp package: imports are absolute, never relative.
"""

from headstart.kfp.local import LocalRun, run_local
from headstart.kfp.remote import Submitted, schedule, submit
from headstart.kfp.spec import DEFAULT_PACKAGE, build, compile  # noqa: A004

__all__ = ["DEFAULT_PACKAGE", "LocalRun", "Submitted", "build", "compile", "run_local", "schedule", "submit"]
