"""Reading a YAML mapping key by key, with errors that name the key: the configuration
file's sections and the filter presets' parameters alike."""

from __future__ import annotations

import difflib
from typing import Any

from fink_spark.errors import ConfigError


class Section:
    """One mapping of the YAML file, read key by key with errors that name the key."""

    def __init__(self, data: Any, path: str, known: set[str]) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path or 'the file'} must be a mapping of keys to values.")
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(str(key), sorted(known), n=1)
                suggestion = f" Did you mean {key_name(path, hint[0])!r}?" if hint else ""
                raise ConfigError(
                    f"Unknown key {key_name(path, str(key))!r}.{suggestion} "
                    f"Known keys here: {', '.join(sorted(known))}."
                )
        self.data = data
        self.path = path

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        name = key_name(self.path, key)
        if key not in self.data or self.data[key] is None:
            if required:
                raise ConfigError(f"Missing required key {name!r}.")
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind in (int, float):
            raise ConfigError(f"{name!r} must be a number, not {value!r}.")
        if not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(
                f"{name!r} must be of type {expected}, not {type(value).__name__} ({value!r})."
            )
        return value

    def section(self, key: str, known: set[str]) -> Section:
        return Section(self.data.get(key), key_name(self.path, key), known)

    def number(self, key: str, default: float | None = None, low: float | None = None,
               high: float | None = None) -> float:
        """A number (required unless it has a default), within [low, high] where given."""
        value = self.data.get(key, default)
        name = key_name(self.path, key)
        if value is None:
            raise ConfigError(f"{name} is required.")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, not {value!r}.")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{name} must be between {low} and {high}, not {value}.")
        return float(value)

    def optional(self, key: str) -> float | None:
        """A number if given, else None."""
        return self.number(key) if key in self.data else None


def key_name(path: str, key: str) -> str:
    """A key's full name in messages: `kafka.servers`, `filters[0].radius`."""
    return f"{path}.{key}" if path else key
