"""The package's shape (DESIGN.md, "Shape"): imports flow one way, and the CLI offers the registry's methods."""

from __future__ import annotations

import ast
from pathlib import Path

import tenshot
from tenshot.cli import main
from tenshot.config import DistillConfig
from tenshot.methods import METHODS

PACKAGE = Path(tenshot.__file__).parent


def module_name(file: Path) -> str:
    parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(file: Path, modules: set[str]) -> set[str]:
    """The package's modules ``file`` imports, at any depth (a name imported from a package counts as its
    submodule when it is one)."""
    name = module_name(file)
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(file) for file in files}
    return {module_name(file): imported(file, modules) - {module_name(file)} for file in files}


def test_import_graph_is_read():
    graph = import_graph()
    assert "tenshot.sampling" in graph["tenshot.api"]  # module level
    assert "tenshot.sampling" in graph["tenshot.metrics.evaluate"]  # inside a function
    assert "tenshot.models.features" in graph["tenshot.methods.phasic"]  # from ..models import features


def test_imports_form_no_circle():
    graph = import_graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            assert state.get(target) != "open", "import circle: " + " -> ".join(path[path.index(target) :] + [target])
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_cli_methods_are_the_registry():
    """``adapt --method`` offers every method of the registry but distill's, and nothing else."""
    adapt = next(param for param in main.commands["adapt"].params if param.name == "method")
    assert set(adapt.type.choices) == set(METHODS) - {DistillConfig().method}
    assert DistillConfig().method in METHODS


# Lowest first; a module may import its own layer and those below it (DESIGN.md, "Shape": data -> models ->
# methods -> train -> sampling -> metrics -> report -> api -> cli, with the shared helpers beneath them).
LAYERS = (
    ("tenshot.errors", "tenshot.cache"),
    ("tenshot.data",),
    ("tenshot.diffusion",),
    ("tenshot.models",),
    ("tenshot.config",),
    ("tenshot.methods",),
    ("tenshot.train",),
    ("tenshot.runs",),
    ("tenshot.sampling", "tenshot.source_images"),
    ("tenshot.metrics",),
    ("tenshot.run_report",),
    ("tenshot.api",),
    ("tenshot.cli", "tenshot"),
)


def layer(module: str) -> int:
    """The index in LAYERS of the longest prefix that names ``module`` or a package above it."""
    matches = [(len(prefix), index) for index, prefixes in enumerate(LAYERS) for prefix in prefixes if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} has no layer in LAYERS"
    return max(matches)[1]


def test_imports_flow_down_the_layers():
    upward = [f"{module} -> {target}" for module, targets in import_graph().items() for target in targets if layer(target) > layer(module)]
    assert not upward, "imports from a lower layer to a higher one: " + ", ".join(sorted(upward))


def test_the_layer_check_can_fail():
    assert layer("tenshot.methods.crdi") > layer("tenshot.models.unet")
    assert layer("tenshot.sampling") < layer("tenshot.metrics.evaluate") < layer("tenshot.api")
    assert layer("tenshot") == layer("tenshot.cli")
