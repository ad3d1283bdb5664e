"""Base for the frozen, validated configuration dataclasses of every step.

A config is built once from the CLI or the Processing parameters, validated on construction
(so a bad value fails before any work starts) and written as JSON next to the outputs, so every
result says how it was made.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

C = TypeVar("C", bound="StepConfig")


@dataclasses.dataclass(frozen=True)
class StepConfig:
    """Frozen config; subclasses override :meth:`validate` and call :func:`require` in it."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check values; raise :class:`ConfigError` with a message that says what to change."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (paths become strings, tuples lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any]) -> C:
        """Build from a dict, refusing unknown keys so typos in scripts do not pass silently."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} option(s): {', '.join(unknown)}; valid options: {', '.join(sorted(names))}"
            )
        return cls(**values)


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value
