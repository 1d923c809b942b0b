"""The Kubeflow pipeline driver: compile the spec, run it locally with kfp.local, submit or schedule it.

The pipeline itself is pipelines/headstart_pipeline.py and its components are components/*.py;
this package builds them (images and pool settings are chosen at compile time) and talks to KFP.
"""

from headstart.pipeline.local import LocalRun, run_local
from headstart.pipeline.remote import Submitted, schedule, submit
from headstart.pipeline.spec import DEFAULT_PACKAGE, build, compile  # noqa: A004

__all__ = ["DEFAULT_PACKAGE", "LocalRun", "Submitted", "build", "compile", "run_local", "schedule", "submit"]
