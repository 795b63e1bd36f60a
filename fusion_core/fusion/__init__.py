"""Fusion operators behind one interface; importing this package registers them all."""
from fusion_core.fusion.base import FusionOperator
from fusion_core.fusion.registry import create_fusion, list_fusions, register_fusion

# Importing each operator module registers it.
from fusion_core.fusion import (  # noqa: E402,F401
    concat,
    cross_attention,
    gated_self_attention,
    information_bottleneck,
    interaction,
    sequential,
)

__all__ = ["FusionOperator", "create_fusion", "list_fusions", "register_fusion"]
