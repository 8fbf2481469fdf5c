"""The architecture as a rule, not a hope: which package may import which, and the map of the tree.

* ``cli/`` and ``slicer/`` are front ends: they import the rest of the library, nothing imports them.
* Only ``slicer/`` imports Slicer (``slicer``, ``qt``, ``ctk``, ``vtkMRML*``, ``vtkSlicer*``).
* ``phantom/`` is a development tool (not installed into Slicer): only ``cli/`` uses it.
* Everything parses as Python 3.9 (Slicer 5.8's).
* ``core/manifest.py`` is torch-free (the Slicer panel reads manifests before PyTorch is installed).
* docs/DEVELOPING.md's module map is generated from the modules' docstrings
  (``python Testing/test_architecture.py --write`` rewrites it).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "AneurysmSeg" / "AneurysmSegLib"
DEVELOPING = Path(__file__).resolve().parents[1] / "docs" / "DEVELOPING.md"
SLICER_ROOTS = ("slicer", "qt", "ctk", "vtkITK")
SLICER_PREFIXES = ("vtkMRML", "vtkSlicer")
FRONT_ENDS = ("cli", "slicer")
MAP_BEGIN, MAP_END = "<!-- module map: generated -->", "<!-- end of module map -->"


def module_name(path: Path) -> str:
    parts = ["AneurysmSegLib", *path.relative_to(LIB).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth (functions included)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from . import x` imports module x
    return found


def library_files() -> list[Path]:
    return sorted(p for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)


def subpackage(path: Path) -> str:
    rel = path.relative_to(LIB).parts
    return rel[0] if len(rel) > 1 else ""


def test_front_ends_are_imported_by_nothing():
    for path in library_files():
        own = subpackage(path)
        for name in imports_of(path):
            for front in FRONT_ENDS:
                if name == f"AneurysmSegLib.{front}" or name.startswith(f"AneurysmSegLib.{front}."):
                    assert own == front, f"{path.relative_to(LIB)} imports the front end {name}"


def test_only_the_slicer_package_imports_slicer():
    for path in library_files():
        if subpackage(path) == "slicer":
            continue
        for name in imports_of(path):
            root = name.split(".")[0]
            assert root not in SLICER_ROOTS and not root.startswith(SLICER_PREFIXES), \
                f"{path.relative_to(LIB)} imports {name}: only AneurysmSegLib/slicer/ may import Slicer"


def test_the_phantom_generator_is_used_only_by_the_command_line():
    for path in library_files():
        if subpackage(path) in ("phantom", "cli"):
            continue
        bad = {n for n in imports_of(path) if n.startswith("AneurysmSegLib.phantom")}
        assert not bad, f"{path.relative_to(LIB)} imports {sorted(bad)}: phantom/ is not installed into Slicer"


def test_the_manifest_reader_does_not_need_torch():
    names = imports_of(LIB / "core" / "manifest.py")
    assert not {n for n in names if n.split(".")[0] == "torch"}
    assert not {n for n in names if n.startswith("AneurysmSegLib.") and n != "AneurysmSegLib.core.errors"
                and not n.startswith("AneurysmSegLib.core.errors.")}


def test_the_rules_catch_a_violation(tmp_path: Path):
    """The checker itself: a module importing the CLI and slicer is seen as doing so."""
    bad = LIB / "stages" / "_probe_for_test.py"
    bad.write_text("from ..cli import segment\n\ndef f():\n    import slicer\n    from ..phantom import render\n")
    try:
        names = imports_of(bad)
    finally:
        bad.unlink()
    assert {"AneurysmSegLib.cli", "AneurysmSegLib.cli.segment", "slicer", "AneurysmSegLib.phantom.render"} <= names


def test_code_parses_as_python_3_9():
    """Slicer 5.8 bundles Python 3.9: no syntax newer than that in the module or its library."""
    for path in [*library_files(), LIB.parent / "AneurysmSeg.py"]:
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


def module_map() -> str:
    """The markdown table of every module with the first line of its docstring."""
    rows = ["| module | what it is for |", "|---|---|"]
    for path in library_files():
        if path.name == "__main__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        rel = path.relative_to(LIB).as_posix()
        rows.append(f"| `{rel}` | {first.replace('|', '/')} |")
    return "\n".join([MAP_BEGIN, *rows, MAP_END])


def test_every_module_says_what_it_is_for():
    missing = [p.relative_to(LIB).as_posix() for p in library_files()
               if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert not missing, f"modules without a docstring: {missing}"


def test_developing_md_holds_the_current_module_map():
    text = DEVELOPING.read_text(encoding="utf-8")
    assert MAP_BEGIN in text and MAP_END in text
    current = text[text.index(MAP_BEGIN): text.index(MAP_END) + len(MAP_END)]
    assert current == module_map(), "docs/DEVELOPING.md is stale: run `python Testing/test_architecture.py --write`"


if __name__ == "__main__":
    if "--write" in sys.argv:
        text = DEVELOPING.read_text(encoding="utf-8")
        a, b = text.index(MAP_BEGIN), text.index(MAP_END) + len(MAP_END)
        DEVELOPING.write_text(text[:a] + module_map() + text[b:], encoding="utf-8")
        print(f"wrote the module map into {DEVELOPING}")
