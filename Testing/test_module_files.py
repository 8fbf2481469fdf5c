"""The Slicer module's files, checked without Slicer: the .ui, the CMake listings, AneurysmSeg.py.

Slicer's Python (qt, ctk, ScriptedLoadableModule) is absent here, so AneurysmSeg.py is checked by
parsing: it compiles, defines the template's classes, and every ``self.ui.<name>`` it uses exists in
the .ui with a class Slicer can create.
"""

from __future__ import annotations

import ast
import fnmatch
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "AneurysmSeg"
MODULE_PY = MODULE_DIR / "AneurysmSeg.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "AneurysmSeg.ui"

#: Qt classes that need no <customwidget> declaration (uic knows them).
QT_CLASSES = {"QWidget", "QFrame", "QLabel", "QPushButton", "QToolButton", "QComboBox", "QProgressBar",
              "QTableView", "QCheckBox", "QSpinBox", "QDoubleSpinBox", "QLineEdit", "QGroupBox"}


@pytest.fixture(scope="module")
def ui() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def uiWidgets(ui: ET.Element) -> dict[str, str]:
    return {w.get("name"): w.get("class") for w in ui.iter("widget")}


def moduleTree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"))


def test_module_compiles_and_defines_template_classes(tmp_path):
    py_compile.compile(str(MODULE_PY), cfile=str(tmp_path / "AneurysmSeg.pyc"), doraise=True)
    classes = {node.name: [ast.unparse(b) for b in node.bases] for node in moduleTree().body if isinstance(node, ast.ClassDef)}
    assert "ScriptedLoadableModule" in classes["AneurysmSeg"]
    assert "ScriptedLoadableModuleWidget" in classes["AneurysmSegWidget"]
    assert "ScriptedLoadableModuleLogic" in classes["AneurysmSegLogic"]
    assert "ScriptedLoadableModuleTest" in classes["AneurysmSegTest"]
    assert "AneurysmSegParameterNode" in classes
    logic = next(n for n in moduleTree().body if isinstance(n, ast.ClassDef) and n.name == "AneurysmSegLogic")
    methods = {f.name: [a.arg for a in f.args.args] for f in logic.body if isinstance(f, ast.FunctionDef)}
    assert methods["segment"][:2] == ["self", "volumeNode"]
    assert methods["refine"][:2] == ["self", "volumeNode"]  # the seeds are the volume's seeds node
    assert methods["exportStl"] == ["self", "segmentationNode", "folder", "coordinateSystem"]


def test_module_text_states_title_category_and_clinical_disclaimer():
    text = MODULE_PY.read_text(encoding="utf-8")
    assert '_("Aneurysm Segmentation")' in text
    assert '"Segmentation")]' in text
    assert "not for\nclinical use" in text or "not for clinical use" in text
    # heavy packages are imported lazily, never when Slicer loads the module
    topLevelImports = {alias.name.split(".")[0] for node in moduleTree().body
                       if isinstance(node, (ast.Import, ast.ImportFrom))
                       for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert not topLevelImports & {"torch", "AneurysmSegLib", "scipy", "SimpleITK"}


def test_ui_parses_and_declares_every_custom_widget(ui):
    declared = {c.findtext("class"): c.findtext("extends") for c in ui.iter("customwidget")}
    for name, cls in uiWidgets(ui).items():
        assert cls in QT_CLASSES or cls in declared, f"{name}: class {cls} is not declared in <customwidgets>"
    for cls, base in declared.items():
        assert base and (base in QT_CLASSES or base in declared), f"{cls} extends undeclared {base}"
    assert uiWidgets(ui)["inputVolumeSelector"] == "qMRMLNodeComboBox"
    selector = next(w for w in ui.iter("widget") if w.get("name") == "inputVolumeSelector")
    nodeTypes = [s.text for s in selector.iter("string")]
    assert "vtkMRMLScalarVolumeNode" in nodeTypes


def test_every_ui_widget_the_code_uses_exists(ui):
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text(encoding="utf-8")))
    assert {"segmentButton", "progressBar", "statusLabel", "refineButton", "exportStlButton"} <= used
    missing = used - set(uiWidgets(ui))
    assert not missing, f"AneurysmSeg.py uses widgets the .ui lacks: {sorted(missing)}"


def test_parameter_names_in_ui_match_the_parameter_node(ui):
    tree = moduleTree()
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AneurysmSegParameterNode")
    parameters = {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    bound = {p.findtext("string") for p in ui.iter("property") if p.get("name") == "SlicerParameterName"}
    assert bound, "no widget is bound to the parameter node"
    assert bound <= parameters, f"unknown parameters in the .ui: {sorted(bound - parameters)}"
    assert {"inputVolume", "device", "detectionThreshold", "stlCoordinateSystem"} <= bound


NOT_INSTALLED = "AneurysmSegLib/phantom/"  # the phantom generator is a development tool, not installed into Slicer


def cmakeGlobs(cmakeText: str, variable: str) -> list[str]:
    block = re.search(rf"file\(GLOB_RECURSE {variable}(.*?)\)", cmakeText, re.S).group(1)
    return [t for t in block.split() if "*" in t]


def test_module_cmake_lists_every_python_file_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    scripts = cmakeGlobs(text, "MODULE_LIB_SCRIPTS")
    data = cmakeGlobs(text, "MODULE_DATA_RESOURCES")

    def covered(rel: str, patterns: list[str]) -> bool:
        # CMake's GLOB_RECURSE "*" also crosses folders, like fnmatch's
        return any(fnmatch.fnmatchcase(rel, p) for p in patterns)

    for path in sorted(MODULE_DIR.rglob("*.py")):
        rel = path.relative_to(MODULE_DIR).as_posix()
        if rel.startswith("Testing/") or rel.startswith(NOT_INSTALLED):
            continue
        assert rel == "AneurysmSeg.py" and "${MODULE_NAME}.py" in text or covered(rel, scripts), f"{rel} not built"
    for path in sorted((MODULE_DIR / "Resources").rglob("*")):
        rel = path.relative_to(MODULE_DIR).as_posix()
        if path.is_dir() or "__pycache__" in rel or path.name.startswith("."):
            continue
        explicit = rel.replace("AneurysmSeg.", "${MODULE_NAME}.") in text
        assert explicit or covered(rel, data), f"resource {rel} is not installed with the module"


def test_extension_cmake_and_self_test_registration():
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                     "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"set\({variable} ", top), variable
    assert "find_package(Slicer 5.8 REQUIRED)" in top and "add_subdirectory(AneurysmSeg)" in top
    assert "Slicer_EXTENSION_CPACK" in top
    testing = (MODULE_DIR / "Testing" / "Python" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicer_add_python_unittest" in testing and "${MODULE_NAME}.py" in testing
    assert "add_subdirectory(Python)" in (MODULE_DIR / "Testing" / "CMakeLists.txt").read_text(encoding="utf-8")


def test_extension_metadata_is_true():
    """No URL of a repository that does not exist; torch from the PyTorch extension; contributors with
    an affiliation, as Slicer's extension catalogue expects ("Name (Organisation)")."""
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    assert not re.findall(r"https?://", top), "the extension has no public web page or repository yet"
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', top)
    contributors = re.search(r'set\(EXTENSION_CONTRIBUTORS "([^"]+)"\)', top).group(1)
    assert all(re.fullmatch(r"[^()]+ \([^()]+\)", c.strip()) for c in contributors.split(","))
    module = MODULE_PY.read_text(encoding="utf-8")
    assert "github.com" not in module and "AneurysmSeg team" in module
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "Slicer 5.8" in readme and "panel.png" not in readme


def test_module_does_not_import_loadable_module_mrml_classes_at_load():
    """Before Slicer 5.10, ``slicer.vtkMRMLMarkups*`` appear only once the Markups module is set up,
    after "AneurysmSeg" (modules are set up alphabetically): importing them at module load fails."""
    tree = moduleTree()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "slicer":
            assert not [a.name for a in node.names if a.name.startswith("vtk")], ast.unparse(node)
    atLoad = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    atLoad += [s for c in tree.body if isinstance(c, ast.ClassDef) for s in c.body
               if not isinstance(s, (ast.FunctionDef, ast.ClassDef))]
    names = {n.attr for stmt in atLoad for n in ast.walk(stmt) if isinstance(n, ast.Attribute)}
    names |= {n.id for stmt in atLoad for n in ast.walk(stmt) if isinstance(n, ast.Name)}
    assert not {n for n in names if n.startswith(("vtkMRMLMarkups", "vtkSlicerMarkups"))}


def test_self_tests_run_without_torch_and_one_goes_through_the_worker():
    tree = moduleTree()
    test = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "AneurysmSegTest")
    methods = {f.name: f for f in test.body if isinstance(f, ast.FunctionDef)}
    runTest = ast.unparse(methods["runTest"])
    assert "test_FindingsWithoutNetworks" in runTest and "test_BackgroundSegmentation" in runTest
    noNetworks = ast.unparse(methods["test_FindingsWithoutNetworks"])
    assert "torch" not in noNetworks and ".segment(" not in noNetworks and "submitRun" not in noNetworks
    background = ast.unparse(methods["test_BackgroundSegmentation"])
    assert background.index("missingPackages") < background.index("submitRun")  # skips cleanly without torch
    assert "pollWorker" in background and "refine=True" in background


SLICER_VERSION_STUB = """set(PACKAGE_VERSION "{version}")
if("${{PACKAGE_VERSION}}" VERSION_LESS "${{PACKAGE_FIND_VERSION}}")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
"""

SLICER_STUB = """# Stand-in for a Slicer build tree: records what the extension asks Slicer's macros to build.
set(Slicer_USE_FILE ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_GENERATE_CONFIG ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
set(Slicer_EXTENSION_CPACK ${CMAKE_CURRENT_LIST_DIR}/empty.cmake)
function(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(M "WITH_GENERIC_TESTS;WITH_SUBDIR" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  file(WRITE ${CMAKE_BINARY_DIR}/module.txt "${M_NAME}\\n${M_WITH_GENERIC_TESTS}\\n${M_SCRIPTS}\\n${M_RESOURCES}\\n")
endfunction()
function(slicer_add_python_unittest)
  cmake_parse_arguments(T "" "SCRIPT" "SLICER_ARGS;TESTNAME_PREFIX" ${ARGN})
  file(WRITE ${CMAKE_BINARY_DIR}/unittest.txt "${T_SCRIPT}")
endfunction()
file(WRITE ${CMAKE_BINARY_DIR}/extension.txt "${EXTENSION_HOMEPAGE}\\n${EXTENSION_CATEGORY}\\n${EXTENSION_SCREENSHOTURLS}\\n")
"""


def test_cmake_configures_and_builds_every_file(tmp_path):
    """The real CMake files, configured by CMake against a stand-in for Slicer's macros: the module
    gets every Python file and resource of the source tree, the self-test script is registered."""
    import shutil
    import subprocess

    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    stub = tmp_path / "slicer"
    stub.mkdir()
    (stub / "SlicerConfig.cmake").write_text(SLICER_STUB)
    (stub / "SlicerConfigVersion.cmake").write_text(SLICER_VERSION_STUB.format(version="5.8.1"))
    (stub / "empty.cmake").write_text("")
    build = tmp_path / "build"
    run = subprocess.run([cmake, "-S", str(ROOT), "-B", str(build), f"-DSlicer_DIR={stub}", "-DBUILD_TESTING=ON"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    name, genericTests, scripts, resources = (build / "module.txt").read_text().splitlines()
    assert name == "AneurysmSeg" and genericTests == "TRUE"
    expectedScripts = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*.py")
                       if not {"Testing", "Resources"} & set(p.relative_to(MODULE_DIR).parts)
                       and not p.relative_to(MODULE_DIR).as_posix().startswith(NOT_INSTALLED)}
    assert set(scripts.split(";")) == expectedScripts
    assert "AneurysmSegLib/core/pipeline.py" in expectedScripts and "AneurysmSegLib/slicer/scene.py" in expectedScripts
    expectedResources = {p.relative_to(MODULE_DIR).as_posix() for p in (MODULE_DIR / "Resources").rglob("*")
                         if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")}
    assert set(resources.split(";")) == expectedResources
    assert "Resources/UI/AneurysmSeg.ui" in expectedResources and "Resources/Icons/AneurysmSeg.png" in expectedResources
    assert Path((build / "unittest.txt").read_text()).resolve() == MODULE_PY
    homepage, category, screenshots = (build / "extension.txt").read_text().split("\n")[:3]
    assert category == "Segmentation" and homepage == "" and screenshots == ""
    # a Slicer older than 5.8 is refused at configure time
    (stub / "SlicerConfigVersion.cmake").write_text(SLICER_VERSION_STUB.format(version="5.6.2"))
    old = subprocess.run([cmake, "-S", str(ROOT), "-B", str(tmp_path / "old"), f"-DSlicer_DIR={stub}"],
                         capture_output=True, text=True, timeout=120)
    assert old.returncode != 0 and "5.8" in old.stdout + old.stderr


def test_panel_threshold_default_is_the_bundled_manifests(tmp_path: Path) -> None:
    """The panel's detection threshold starts at the value chosen when the weights were exported; a
    missing or broken manifest falls back to 0.5 instead of breaking the module's import."""
    import json

    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "bundledDetectionThreshold")
    from typing import Optional

    namespace: dict = {"Path": Path, "Optional": Optional, "__file__": str(MODULE_PY)}
    exec(compile(ast.Module(body=[func], type_ignores=[]), str(MODULE_PY), "exec"), namespace)
    manifest = json.loads((MODULE_DIR / "Resources" / "Models" / "manifest.json").read_text())
    assert namespace["bundledDetectionThreshold"]() == manifest["coarse"]["probability_threshold"]

    namespace["__file__"] = str(tmp_path / "AneurysmSeg.py")  # no Resources/Models here
    assert namespace["bundledDetectionThreshold"]() == 0.5
    (tmp_path / "Resources" / "Models").mkdir(parents=True)
    (tmp_path / "Resources" / "Models" / "manifest.json").write_text("{not json")
    assert namespace["bundledDetectionThreshold"]() == 0.5
