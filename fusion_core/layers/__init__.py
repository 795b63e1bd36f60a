from fusion_core.layers.attention import AttentionOutput, MaskedAttention, masked_attention
from fusion_core.layers.context_attention import ContextAttentionOutput, ContextAttentionPooling
from fusion_core.layers.gating import SigmoidGate
from fusion_core.layers.mlp import MLP, FeedForward
from fusion_core.layers.retrieval import (
    ActivationUnit,
    AttentionPool,
    SearchResult,
    gather_history,
    masked_softmax_pool,
    target_attention,
    top_k_search,
)

__all__ = [
    "AttentionOutput",
    "MaskedAttention",
    "masked_attention",
    "MLP",
    "FeedForward",
    "SigmoidGate",
    "ContextAttentionOutput",
    "ContextAttentionPooling",
    "ActivationUnit",
    "AttentionPool",
    "SearchResult",
    "gather_history",
    "masked_softmax_pool",
    "target_attention",
    "top_k_search",
]
