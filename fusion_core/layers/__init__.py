from fusion_core.layers.attention import AttentionOutput, MaskedAttention, masked_attention
from fusion_core.layers.gating import SigmoidGate
from fusion_core.layers.mlp import MLP, FeedForward

__all__ = ["AttentionOutput", "MaskedAttention", "masked_attention", "MLP", "FeedForward", "SigmoidGate"]
