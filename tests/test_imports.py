"""`import fusion_core` stays light: torch, numpy and einops only."""
import subprocess
import sys

HEAVY = ["lightning", "pytorch_lightning", "streamlit", "shap", "monai", "polars", "ot", "matplotlib", "transformers"]


def test_import_fusion_core_pulls_in_no_heavy_dependency():
    code = (
        "import sys, fusion_core; "
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import fusion_core imported: {out.stdout.strip()}"


def test_public_api_lists_every_operator():
    import fusion_core

    assert set(fusion_core.list_fusions()) >= {
        "concat",
        "cross_attention",
        "gated_self_attention",
        "information_bottleneck",
        "sequential",
    }
