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


def test_no_import_circle_between_files():
    """Counting imports inside functions and under TYPE_CHECKING too: a file never reaches itself."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    modules: dict[str, Path] = {}
    for file in [*root.glob("recipes/**/*.py"), *root.glob("fusion_core/**/*.py")]:
        name = ".".join(file.relative_to(root).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = file
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, file in modules.items():
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name and not name.startswith(t + "."))
    cycles = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)
