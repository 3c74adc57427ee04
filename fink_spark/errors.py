"""The errors a user can fix; entry points print them as one paragraph (see `fink_spark.cli`)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and what to do."""


class KafkaAccessError(RuntimeError):
    """The broker could not be reached, refused the credentials, or lacks a topic."""
