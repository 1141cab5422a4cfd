"""The public surface: what the command line and the tests may import, and what the packages export."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUR_PACKAGES = ("carepath", "pathway", "states", "persistence")

# The modules anyone may import: the packages themselves (their `__all__` is the API) and the
# command line's entry point. Every other module of ours is an implementation detail, and outside the
# command line's and the server's own packages its name starts with an underscore.
PUBLIC_MODULES = frozenset(
    {"carepath", "pathway", "states", "persistence", "pathway.cli", "pathway.console", "pathway.server"}
)

# Tests that check internals (raw rows, table layout, hash-chain and key file formats, definition
# files on disk, the renderers and the simulator on their own, the command line's rendering)
# reach the modules that hold them, and only these. The list may only shrink: an entry no test
# imports any more fails `test_white_box_list_is_tight`.
WHITE_BOX_MODULES = frozenset(
    {
        "pathway.cli.render",
        "pathway._diagram",
        "pathway._replay",
        "pathway._simulate",
        "pathway._timeline",
        "persistence._anchors",
        "persistence._chain",
        "persistence._columns",
        "persistence._crypto",
        "persistence._keys",
        "persistence._readonly",
        "persistence._records",
        "persistence._rows",
        "persistence._store",
        "persistence._tables",
        "states._definition",
        "states._guards",
        "states._payloads",
        "states._registry",
        "states._upcast",
    }
)


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str, str | None]]:
    """(line, module, imported name or None) for each import in `source`, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            for alias in node.names:
                yield node.lineno, base, alias.name


def _file_imports(path: Path) -> Iterator[tuple[int, str, str | None]]:
    return _imports(path.read_text(encoding="utf-8"), _module_of(path), path.name == "__init__.py")


def _is_submodule(package: str, name: str) -> bool:
    """Whether `from package import name` imports a module (not a name the package defines)."""
    if importlib.util.find_spec(package) is None:
        return False
    loaded = importlib.import_module(package)
    if not hasattr(loaded, "__path__"):
        return False
    value = getattr(loaded, name, None)
    if value is not None:
        return isinstance(value, ModuleType)
    return importlib.util.find_spec(f"{package}.{name}") is not None


def _problems(imports: Iterator[tuple[int, str, str | None]], allowed: frozenset[str]) -> list[str]:
    """Every import of a private name, of a private module, of one of our modules outside
    `allowed`, or of a name a public package does not list in `__all__`."""
    problems = []
    for line, module, name in imports:
        if module == "__future__":
            continue
        if name is not None and name.startswith("_"):
            problems.append(f"{line}: imports the private name {name} from {module}")
            continue
        if module.split(".")[0] not in OUR_PACKAGES:
            continue
        target = module
        if name is not None and _is_submodule(module, name):
            target, name = f"{module}.{name}", None  # `from pathway.cli import app` imports a module
        if target in WHITE_BOX_MODULES and target in allowed:
            continue
        if any(part.startswith("_") for part in target.split(".")):
            problems.append(f"{line}: imports the private module {target}")
        elif target not in allowed:
            problems.append(f"{line}: imports {target}, which is not public")
        elif (
            name is not None
            and target in PUBLIC_MODULES
            and name not in getattr(importlib.import_module(target), "__all__", ())
        ):
            problems.append(f"{line}: {target} does not export {name} in __all__")
    return problems


CLI_FILES = _python_files(ROOT / "pathway" / "cli")
CLI_MODULES = frozenset(_module_of(p) for p in CLI_FILES)
SERVER_FILES = _python_files(ROOT / "pathway" / "server")
SERVER_MODULES = frozenset(_module_of(p) for p in SERVER_FILES)
TEST_FILES = _python_files(ROOT / "tests")


@pytest.mark.parametrize("path", CLI_FILES, ids=lambda p: p.name)
def test_the_command_line_imports_only_public_names(path: Path) -> None:
    """A command-line module imports the packages' public names and its own modules, nothing private."""
    assert _problems(_file_imports(path), PUBLIC_MODULES | CLI_MODULES) == []


@pytest.mark.parametrize("path", SERVER_FILES, ids=lambda p: p.name)
def test_the_server_imports_only_public_names(path: Path) -> None:
    """A server module imports the packages' public names and its own modules, nothing private."""
    assert _problems(_file_imports(path), PUBLIC_MODULES | SERVER_MODULES) == []


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: str(p.relative_to(ROOT / "tests")))
def test_tests_import_only_public_names(path: Path) -> None:
    """A test imports the public API (and the listed white-box modules), never a private name."""
    assert _problems(_file_imports(path), PUBLIC_MODULES | WHITE_BOX_MODULES) == []


# The packages whose internal modules carry a leading underscore, so that the name alone tells the
# API from the internals. The command line and the server are applications: their own modules
# keep plain names, and their packages are the door.
NAMED_PACKAGES = ("pathway", "states", "persistence")
APPLICATIONS = frozenset({"pathway.cli", "pathway.server"})


def _misnamed(modules: list[str]) -> list[str]:
    """The modules of `modules` that are neither public, an application's, nor named with an underscore."""
    return [
        module
        for module in modules
        if module not in PUBLIC_MODULES
        and not any(module.startswith(f"{app}.") for app in APPLICATIONS)
        and not module.endswith(".__main__")
        and not module.rpartition(".")[2].startswith("_")
    ]


def test_internal_modules_have_underscore_names() -> None:
    """Every module of pathway, states and persistence but the public ones starts with an underscore."""
    modules = [_module_of(path) for package in NAMED_PACKAGES for path in _python_files(ROOT / package)]
    assert "pathway._engine" in modules
    assert _misnamed(modules) == []


def test_the_naming_check_finds_a_public_looking_internal_module() -> None:
    """A new internal module with a plain name is reported; public, application and underscore ones are not."""
    found = _misnamed(
        [
            "pathway",
            "pathway.console",
            "pathway.cli.render",
            "pathway.server.app",
            "pathway.__main__",
            "states._load",
            "persistence.vault",
            "pathway.extra.tool",
        ]
    )
    assert found == ["persistence.vault", "pathway.extra.tool"]


def test_white_box_list_is_tight() -> None:
    """Every white-box module listed is still imported by some test (the list only shrinks)."""
    imported = {module for path in TEST_FILES for _, module, _ in _file_imports(path)}
    imported |= {f"{module}.{name}" for path in TEST_FILES for _, module, name in _file_imports(path)}
    assert sorted(WHITE_BOX_MODULES - imported) == []


def test_the_checker_finds_each_kind_of_forbidden_import() -> None:
    """A private name, a private or non-public module, and a name missing from __all__ are each reported."""
    source = (
        "from pathway.cli.render import styled_state\n"
        "from pathway import _LAZY\n"
        "from pathway import no_such_name\n"
        "import persistence._hidden\n"
        "from .. import Engine, clinical_time\n"
        "from . import app\n"
    )
    found = _problems(_imports(source, "pathway.cli.sample"), PUBLIC_MODULES)
    assert found == [
        "1: imports pathway.cli.render, which is not public",
        "2: imports the private name _LAZY from pathway",
        "3: pathway does not export no_such_name in __all__",
        "4: imports the private module persistence._hidden",
    ]


@pytest.mark.parametrize("package", [*OUR_PACKAGES, "pathway.cli", "pathway.server"])
def test_every_exported_name_exists(package: str) -> None:
    """Each name in a package's __all__ can be imported from it."""
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
