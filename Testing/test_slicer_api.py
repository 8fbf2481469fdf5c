"""The module calls only Slicer API that exists in Slicer 5.8 (see slicer_api.py for the why and how).

The listing check always runs. The check against Slicer's sources runs when ``SLICER_SOURCE_DIR`` names
a git checkout of Slicer with the release tags (the search tool's ``fetch github:Slicer/Slicer`` gives
one); it is skipped otherwise, e.g. in CI.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

from slicer_api import (NOT_SLICER, RELEASE_TAGS, SLICER_API, SLICER_CONSTANTS, SLICER_UTIL, SLICER_WIDGET_API,
                        allowedCalls)

ROOT = Path(__file__).resolve().parents[1]
MODULE_FILES = [ROOT / "AneurysmSeg" / "AneurysmSeg.py", *sorted((ROOT / "AneurysmSeg" / "AneurysmSegLib" / "slicer").glob("*.py"))]

#: Capitalised attributes read (not called) that are not Slicer's: VTK, Python, Qt names.
NOT_SLICER_ATTRIBUTES = frozenset({"VTK_UNSIGNED_CHAR", "ModifiedEvent", "CREATE_NO_WINDOW", "PIPE", "Empty",
                                   "NoSuchProcess", "PackageNotFoundError"})
#: Modules whose capitalised attributes are not Slicer's: the library's own and Python's.
NOT_SLICER_MODULES = frozenset({"scene", "findings", "worker", "runners", "queue", "threading", "subprocess",
                                "tempfile", "psutil", "importlib"})


def moduleCalls(source: str) -> dict[str, set[str]]:
    """What a file calls and reads: capitalised method calls, ``slicer.util.*``, ``slicer.vtk*`` classes,
    capitalised attributes read, and methods called on ``self.ui.<widget>``."""
    found: dict[str, set[str]] = {"calls": set(), "util": set(), "classes": set(), "attributes": set(), "widgets": set()}
    tree = ast.parse(source)
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            called.add(id(node.func))
            name = node.func.attr
            if name[:1].isupper() and not ast.unparse(node.func).startswith("slicer.util."):
                found["calls"].add(name)
            target = node.func.value
            if (isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute)
                    and isinstance(target.value.value, ast.Name) and target.value.value.id == "self"
                    and target.value.attr == "ui" and name != "connect"):
                found["widgets"].add(name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        text = ast.unparse(node)
        if text.startswith("slicer.util."):
            found["util"].add(node.attr)
        elif isinstance(node.value, ast.Name) and node.value.id == "slicer" and node.attr.startswith("vtk"):
            found["classes"].add(node.attr)
        elif (id(node) not in called and node.attr[:1].isupper() and not node.attr.startswith("vtk")
              and not (isinstance(node.value, ast.Name) and node.value.id in NOT_SLICER_MODULES)):
            found["attributes"].add(node.attr)
    return found


def gather() -> dict[str, set[str]]:
    total: dict[str, set[str]] = {}
    for path in MODULE_FILES:
        for key, names in moduleCalls(path.read_text(encoding="utf-8")).items():
            total.setdefault(key, set()).update(names)
    return total


def test_module_calls_only_the_listed_slicer_api():
    found = gather()
    assert not found["calls"] - allowedCalls(), "unlisted calls (check them at the tags, then list them)"
    assert not found["util"] - SLICER_UTIL
    assert not found["classes"] - set(SLICER_API) - {"vtkMRMLScalarVolumeNode"}
    constants = set().union(*SLICER_CONSTANTS.values())
    assert not found["attributes"] - constants - NOT_SLICER_ATTRIBUTES
    assert not found["widgets"] - set().union(*SLICER_WIDGET_API.values())
    # the list holds nothing the module no longer uses
    used = found["calls"] | found["attributes"]
    assert not set().union(*SLICER_API.values()) - used, "listed but not called: drop them from slicer_api.py"


def test_the_listing_check_sees_a_5_10_only_call():
    """Issue 12's first point: vtkSegment.SetTerminology exists only from Slicer 5.10."""
    found = moduleCalls("def f(segment):\n    segment.SetTerminology('x')\n    slicer.util.newHelper()\n")
    assert "SetTerminology" in found["calls"] - allowedCalls() and found["util"] == {"newHelper"}


# --------------------------------------------------------------------- against Slicer's own sources


def slicerSource() -> Path:
    folder = os.environ.get("SLICER_SOURCE_DIR", "")
    if not folder or not Path(folder).exists():
        pytest.skip("SLICER_SOURCE_DIR (a git checkout of Slicer with its release tags) is not set")
    return Path(folder)


@lru_cache(maxsize=None)
def tree(repo: str, tag: str) -> tuple[str, ...]:
    out = subprocess.run(["git", "--git-dir" if repo.endswith(".git") or Path(repo, "HEAD").is_file() else "-C",
                          repo, "ls-tree", "-r", "--name-only", tag], capture_output=True, text=True, check=True)
    return tuple(out.stdout.splitlines())


@lru_cache(maxsize=None)
def show(repo: str, tag: str, path: str) -> str:
    flag = "--git-dir" if Path(repo, "HEAD").is_file() else "-C"
    return subprocess.run(["git", flag, repo, "show", f"{tag}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def header(repo: str, tag: str, className: str) -> str:
    paths = [p for p in tree(repo, tag) if p.endswith(f"/{className}.h")]
    assert paths, f"{className}.h not found at {tag}"
    return show(repo, tag, paths[0])


def declared(text: str, name: str) -> bool:
    """A method declaration or a vtk property macro that defines it (vtkGetMacro(Name, ...) -> GetName)."""
    if re.search(rf"\b{re.escape(name)}\s*\(", text) or re.search(rf"\b{re.escape(name)}\b\s*[=,}}]", text):
        return True
    prop = re.sub(r"^(Get|Set)", "", name)
    return bool(re.search(rf"vtk(Get|Set|Boolean)\w*Macro\(\s*{re.escape(prop)}\s*[,)]", text))


@pytest.mark.parametrize("tag", RELEASE_TAGS)
def test_every_listed_api_exists_at_the_release_tag(tag):
    repo = str(slicerSource())
    missing = []
    for table in (SLICER_API, SLICER_CONSTANTS, SLICER_WIDGET_API):
        for className, names in table.items():
            text = header(repo, tag, className)
            missing += [f"{className}.{n}" for n in sorted(names) if not declared(text, n)]
    util = show(repo, tag, "Base/Python/slicer/util.py")
    missing += [f"slicer.util.{n}" for n in sorted(SLICER_UTIL) if not re.search(rf"^(def|class) {n}\b", util, re.M)]
    assert not missing, f"not in Slicer {tag}: {missing}"


def test_the_source_check_sees_that_set_terminology_is_new_in_5_10():
    repo = str(slicerSource())
    assert not declared(header(repo, "v5.8.1", "vtkSegment"), "SetTerminology")
    assert declared(header(repo, "v5.10.0", "vtkSegment"), "SetTerminology")
    assert NOT_SLICER.isdisjoint(set().union(*SLICER_API.values()))
