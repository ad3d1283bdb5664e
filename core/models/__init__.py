"""Model registry: a dict of builders plus a factory whose error lists the valid names.

Architectures register themselves with :func:`register_model`; :func:`build_model` builds one from
the ``architecture`` block of a model package (name, in_channels, num_classes, options).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

Builder = Callable[..., "nn.Module"]
MODEL_REGISTRY: dict[str, Builder] = {}


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator: ``@register_model("unet")`` on ``def build(in_channels, num_classes, **options)``."""

    def wrap(builder: Builder) -> Builder:
        MODEL_REGISTRY[name] = builder
        return builder

    return wrap


def _load_builtin() -> None:
    """Import the modules that register the built-in architectures (they need torch)."""
    import importlib

    for module in ("unet", "linknet", "multitask"):
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:  # an architecture module that does not exist yet
            if exc.name != f"{__name__}.{module}":
                raise


def available_models() -> list[str]:
    _load_builtin()
    return sorted(MODEL_REGISTRY)


def build_model(name: str, in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    """Build a registered architecture; unknown names get an error listing the valid ones."""
    _load_builtin()
    if name not in MODEL_REGISTRY:
        raise ConfigError(f"unknown model architecture {name!r}; valid names: {', '.join(sorted(MODEL_REGISTRY))}")
    if in_channels < 1 or num_classes < 1:
        raise ConfigError(f"a model needs at least one input band and one output class, got {in_channels}/{num_classes}")
    return MODEL_REGISTRY[name](in_channels=in_channels, num_classes=num_classes, **options)
