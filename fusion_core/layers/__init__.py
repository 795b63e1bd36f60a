from fusion_core.layers.attention import AttentionOutput, MaskedAttention, masked_attention
from fusion_core.layers.context_attention import ContextAttentionOutput, ContextAttentionPooling
from fusion_core.layers.cross_attention_block import CrossAttentionBlock, CrossAttentionBlockOutput
from fusion_core.layers.gating import SigmoidGate
from fusion_core.layers.grid_sampling import GridNeighbourhood, sample_feature_map
from fusion_core.layers.interaction_decoder import InteractionDecoder, InteractionDecoderOutput
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
    "CrossAttentionBlock",
    "CrossAttentionBlockOutput",
    "GridNeighbourhood",
    "sample_feature_map",
    "InteractionDecoder",
    "InteractionDecoderOutput",
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
