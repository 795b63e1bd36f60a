"""A small registry of fusion operators: ``register_fusion``, ``create_fusion``, ``list_fusions``."""
from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

__all__ = ["register_fusion", "create_fusion", "list_fusions"]

_FUSIONS: dict[str, Callable[..., nn.Module]] = {}
T = TypeVar("T")


def register_fusion(name: str) -> Callable[[T], T]:
    """Class decorator: make an operator buildable as ``create_fusion(name, ...)``."""

    def decorate(cls: T) -> T:
        if name in _FUSIONS and _FUSIONS[name] is not cls:
            raise ValueError(f"fusion {name!r} is already registered by {_FUSIONS[name]!r}; choose another name")
        _FUSIONS[name] = cls  # type: ignore[assignment]
        return cls

    return decorate


def create_fusion(name: str, modality_dims: dict[str, int], dim: int, **options) -> nn.Module:
    """Build a registered fusion operator; every option has a default."""
    if name not in _FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; choose one of {list_fusions()}")
    return _FUSIONS[name](modality_dims=modality_dims, dim=dim, **options)


def list_fusions() -> list[str]:
    return sorted(_FUSIONS)
