"""The layout docs/architecture.md describes, checked against the code's own imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

PACKAGES = ("mnist_core", "monitoring", "serving", "pipeline")
# What each top-level package may import of ours (itself aside).
MAY_IMPORT = {
    "mnist_core": set(),
    "monitoring": {"mnist_core"},
    "serving": {"mnist_core", "monitoring"},
    "pipeline": {"mnist_core", "monitoring"},
}
PIPELINE_SUBPACKAGES = ("stages", "data", "datagen", "training", "evaluation", "registry", "drift")


def modules(package: str) -> list[Path]:
    return sorted((PROJECT_ROOT / package).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """The absolute module names `path` imports (relative imports are not used here)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_the_layers_below(package: str) -> None:
    ours = set(PACKAGES)
    wrong = {
        f"{path.relative_to(PROJECT_ROOT)} imports {name}"
        for path in modules(package)
        for name in imported(path)
        if name.split(".")[0] in ours - {package} - MAY_IMPORT[package]
    }
    assert not wrong, sorted(wrong)


def test_nothing_imports_a_stage() -> None:
    """Stages sit on top: a DVC stage module is run, never imported by the code it calls."""
    climbing = {
        f"{path.relative_to(PROJECT_ROOT)} imports {name}"
        for package in PACKAGES
        for path in modules(package)
        if "stages" not in path.relative_to(PROJECT_ROOT).parts
        for name in imported(path)
        if name == "pipeline.stages" or name.startswith("pipeline.stages.")
    }
    assert not climbing, sorted(climbing)


def test_pipeline_top_holds_only_what_every_stage_shares() -> None:
    top = sorted(path.name for path in (PROJECT_ROOT / "pipeline").glob("*.py"))
    assert top == ["__init__.py", "cli.py", "io.py", "params.py"]
    packages = sorted(
        path.parent.name for path in (PROJECT_ROOT / "pipeline").glob("*/__init__.py")
    )
    assert packages == sorted(PIPELINE_SUBPACKAGES)


@pytest.mark.parametrize("package", [*PACKAGES, *(f"pipeline/{p}" for p in PIPELINE_SUBPACKAGES)])
def test_every_package_says_its_job(package: str) -> None:
    docstring = ast.get_docstring(ast.parse((PROJECT_ROOT / package / "__init__.py").read_text()))
    assert docstring and len(docstring) > 40, f"{package}/__init__.py has no docstring"


def test_no_two_modules_share_a_name_across_packages() -> None:
    """A module's name says its job: the same name in two packages would be two jobs. Stages
    are compared too (`stages/preprocess.py` once stood beside `serving/preprocess.py`); only
    package markers and each package's own `settings.py` may repeat."""
    seen: dict[str, Path] = {}
    clashes = []
    for package in PACKAGES:
        for path in modules(package):
            relative = path.relative_to(PROJECT_ROOT)
            if path.name in ("__init__.py", "__main__.py", "settings.py"):
                continue
            if path.stem in seen:
                clashes.append(f"{seen[path.stem]} and {relative}")
            else:
                seen[path.stem] = relative
    assert not clashes, clashes
