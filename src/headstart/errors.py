"""Errors people meet. The CLI prints these without a traceback and exits non-zero."""

from __future__ import annotations


class HeadstartError(Exception):
    """Base for every error a user can fix; the message says what is wrong and what to do."""

    exit_code: int = 2


class ConfigError(HeadstartError):
    """A parameter in params.yaml or an override is missing or out of range."""


class DataError(HeadstartError):
    """The dataset is missing, malformed or failed validation."""


class ValidationFailed(DataError):
    """Validation ran and found failing checks; training must not start."""

    exit_code = 3


class WeightsError(HeadstartError):
    """Pre-trained weights could not be found, fetched or loaded."""


class RegistryError(HeadstartError):
    """The MLflow tracking server or model registry could not be used."""


class StorageError(HeadstartError):
    """A local path or s3:// URI could not be read or written."""
