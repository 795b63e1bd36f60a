from fusion_core.explain.modality_shapley import MAX_MODALITIES, ShapleyOutput, modality_shapley

__all__ = ["MAX_MODALITIES", "ShapleyOutput", "modality_shapley"]
