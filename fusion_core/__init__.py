"""fusion_core: multimodal fusion operators behind one interface, with losses and explainers.

Light by design: importing it needs torch, numpy and einops only.
"""
from fusion_core.batch import FusionOutput, PreparedInputs, masked_mean, prepare_inputs
from fusion_core.fusion import FusionOperator, create_fusion, list_fusions, register_fusion
from fusion_core.missing import MissingnessBalancer

__version__ = "0.1.0"

__all__ = [
    "FusionOutput",
    "PreparedInputs",
    "prepare_inputs",
    "masked_mean",
    "FusionOperator",
    "create_fusion",
    "list_fusions",
    "register_fusion",
    "MissingnessBalancer",
]
