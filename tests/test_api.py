"""The public surface: exports, the import graph of docs/conventions.md §2, the backend message, lazy extras."""
import ast
import os
import pathlib
import subprocess
import sys

import pytest

import attr_robust_tf

PACKAGE = pathlib.Path(attr_robust_tf.__file__).parent

# Layers of docs/conventions.md §2: a module may import only from strictly lower layers (or its own subpackage).
LAYERS = {
    "errors": 0, "version": 0, "_checks": 0, "_files": 0, "_tensors": 0, "surrogate": 0, "distribute": 0,
    "scores": 1, "data": 1, "metrics": 1, "models": 1, "path_chunks": 1,
    "attributions": 2,
    "attacks.pgd": 3, "settings": 3, "terms": 3, "penalties": 4, "regularizers": 5,
    "attacks.inner": 4, "attacks.attribution": 4,
    "attacks": 5, "objectives": 6, "protocols": 6,
    "robust_model": 7, "evaluation": 7, "schedules": 8,
    "evaluation_report": 8, "tensorboard": 8, "export": 8, "diagnostics": 8,
    "config_utils": 9, "early_stopping": 9.5, "tuning": 10, "experiment": 10, "configs": 10, "pareto": 10,
    "reproduction": 11,
    "cli": 12,
}


def _module_name(path):
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(name):
    while name not in LAYERS and "." in name:
        name = name.rsplit(".", 1)[0]
    return LAYERS.get(name)


def _imports(path):
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("attr_robust_tf"):
            if node.module == "attr_robust_tf":
                deps |= {a.name for a in node.names}
            else:
                deps.add(node.module[len("attr_robust_tf."):])
        elif isinstance(node, ast.Import):
            deps |= {a.name[len("attr_robust_tf."):] for a in node.names if a.name.startswith("attr_robust_tf.")}
    return deps


def test_all_names_resolve_and_are_unique():
    assert len(attr_robust_tf.__all__) == len(set(attr_robust_tf.__all__))
    for name in attr_robust_tf.__all__:
        assert hasattr(attr_robust_tf, name), name


def test_every_module_has_a_layer():
    modules = [_module_name(p) for p in PACKAGE.rglob("*.py") if _module_name(p)]
    assert [m for m in modules if _layer(m) is None] == []


def test_import_direction_follows_the_layers():
    violations = []
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        if not name:
            continue
        top = name.split(".")[0]
        for dep in _imports(path):
            if dep.split(".")[0] == top:  # within one subpackage
                continue
            if _layer(dep) is None or _layer(dep) >= _layer(name):
                violations.append(f"{name} (layer {_layer(name)}) imports {dep} (layer {_layer(dep)})")
    assert violations == []


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_non_tensorflow_backend_is_refused_with_a_clear_message():
    result = _run("import attr_robust_tf", KERAS_BACKEND="jax")
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert "KERAS_BACKEND=tensorflow" in result.stderr and "'jax'" in result.stderr


def test_optional_extras_are_not_imported_with_the_package():
    result = _run("import sys, attr_robust_tf; "
                  "print(sorted(m for m in ('keras_tuner', 'tensorflow_datasets', 'ml_collections', 'tf_explain')"
                  " if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", ["RobustModel", "AttributionAttack", "TopKIntersection", "InnerAttack"])
def test_public_classes_are_registered_serializable(name):
    import keras

    cls = getattr(attr_robust_tf, name)
    assert keras.saving.get_registered_object(keras.saving.get_registered_name(cls)) is cls
