"""Render the module panel (AneurysmSeg/Resources/UI/AneurysmSeg.ui) to a PNG without Slicer.

A one-off picture for the extension page, made with PySide6 offscreen (not a project dependency):

    python3 -m venv /tmp/qtvenv && /tmp/qtvenv/bin/pip install PySide6-Essentials
    QT_QPA_PLATFORM=offscreen /tmp/qtvenv/bin/python Resources/Screenshots/render_panel.py \
        Resources/Screenshots/panel_values.json

Slicer's widgets (ctk*, qMRML*, qSlicer*) do not exist outside Slicer, so each is replaced by a small
stand-in built from plain Qt widgets that looks like it; the layout, texts and tooltips are the .ui's
own. ``values.json`` (optional) gives the rows shown in the tables: {"volume": "...", "rows": [[id, name,
volume, diameter, r, a, s, confidence]], "seeds": [[label, r, a, s]], "status": "..."}. panel_values.json
holds what `make demo` reports for the bundled sample with the bundled weights (demo-output/report.json:
aneurysms 1 and 2 are the sample's two, 3 is a false positive), so the picture shows real output.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from PySide6.QtCore import Property, QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDoubleSpinBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

ROOT = Path(__file__).resolve().parents[2]
UI_FILE = ROOT / "AneurysmSeg" / "Resources" / "UI" / "AneurysmSeg.ui"
OUTPUT = Path(__file__).resolve().parent / "panel.png"


class qMRMLWidget(QWidget):
    pass


class qSlicerWidget(QWidget):
    pass


class ctkCollapsibleButton(QFrame):
    """Slicer's collapsible section: a flat header button with an arrow over its contents."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._text, self._collapsed = "", False
        self.setFrameShape(QFrame.StyledPanel)
        self.setContentsMargins(0, 26, 0, 0)
        self._header = QToolButton(self)
        self._header.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self._header.setArrowType(Qt.DownArrow)
        self._header.setAutoRaise(False)
        self._header.setStyleSheet("QToolButton { text-align: left; font-weight: bold; padding: 2px; }")

    def resizeEvent(self, event):
        self._header.setGeometry(0, 0, self.width(), 24)
        super().resizeEvent(event)

    def getText(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        self._text = text
        self._header.setText(text)

    def getCollapsed(self) -> bool:
        return self._collapsed

    def setCollapsed(self, collapsed: bool) -> None:
        self._collapsed = collapsed
        self._header.setArrowType(Qt.RightArrow if collapsed else Qt.DownArrow)
        self.setContentsMargins(0, 26, 0, 0)
        for child in self.findChildren(QWidget, options=Qt.FindDirectChildrenOnly):
            if child is not self._header:
                child.setVisible(not collapsed)
        self.setMaximumHeight(26 if collapsed else 16777215)

    text = Property(str, getText, setText)
    collapsed = Property(bool, getCollapsed, setCollapsed)


class ctkSliderWidget(QWidget):
    """Slider + spin box, like ctk's."""

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._slider = QSlider(Qt.Horizontal)
        self._spin = QDoubleSpinBox()
        self._spin.setDecimals(2)
        layout.addWidget(self._slider, 1)
        layout.addWidget(self._spin)
        self._slider.setRange(0, 1000)

    def _sync(self):
        lo, hi = self._spin.minimum(), self._spin.maximum()
        self._slider.setValue(int(1000 * (self._spin.value() - lo) / max(hi - lo, 1e-9)))

    def getMinimum(self):
        return self._spin.minimum()

    def setMinimum(self, v):
        self._spin.setMinimum(v)
        self._sync()

    def getMaximum(self):
        return self._spin.maximum()

    def setMaximum(self, v):
        self._spin.setMaximum(v)
        self._sync()

    def getValue(self):
        return self._spin.value()

    def setValue(self, v):
        self._spin.setValue(v)
        self._sync()

    def getSingleStep(self):
        return self._spin.singleStep()

    def setSingleStep(self, v):
        self._spin.setSingleStep(v)

    minimum = Property(float, getMinimum, setMinimum)
    maximum = Property(float, getMaximum, setMaximum)
    value = Property(float, getValue, setValue)
    singleStep = Property(float, getSingleStep, setSingleStep)


class qMRMLNodeComboBox(QComboBox):
    pass


class ctkDirectoryButton(QPushButton):
    pass


def _table(headers, rows, parent=None) -> QTableWidget:
    table = QTableWidget(len(rows), len(headers), parent)
    table.setHorizontalHeaderLabels(headers)
    table.verticalHeader().setVisible(False)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(str(value)))
    return table


class qMRMLSegmentsTableView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.table = _table(["", "Color", "Name"], [])
        layout.addWidget(self.table)


class qMRMLTableView(QTableWidget):
    pass


class qSlicerSimpleMarkupsWidget(qSlicerWidget):
    """Place button + control point table, like Slicer's simple markups widget."""

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.place = QToolButton()
        self.place.setText("Place seed")
        self.place.setToolButtonStyle(Qt.ToolButtonTextOnly)
        row.addWidget(self.place)
        row.addStretch(1)
        layout.addLayout(row)
        self.table = _table(["Label", "R", "A", "S"], [])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.table.setMinimumHeight(80)
        layout.addWidget(self.table)


STAND_INS = [qMRMLWidget, qSlicerWidget, ctkCollapsibleButton, ctkSliderWidget, qMRMLNodeComboBox, ctkDirectoryButton,
             qMRMLSegmentsTableView, qMRMLTableView, qSlicerSimpleMarkupsWidget]

DEFAULTS = {
    "volume": "AneurysmSeg sample TOF",
    "rows": [[1, "Aneurysm 1", "52.4", "5.9", "12.3", "18.7", "-3.1", "0.97"]],
    "seeds": [["S1", "12.3", "18.9", "-3.0"]],
    "status": "Done: 1 aneurysm(s) found.",
    "folder": "~/AneurysmSeg-STL",
}


def loadPanel() -> QWidget:
    tree = ET.parse(UI_FILE)
    root = tree.getroot()
    connections = root.find("connections")
    if connections is not None:  # they connect Slicer-only signals (mrmlSceneChanged)
        root.remove(connections)
    data = QByteArray(ET.tostring(root, encoding="utf-8"))
    buffer = QBuffer(data)
    buffer.open(QIODevice.ReadOnly)
    loader = QUiLoader()
    for cls in STAND_INS:
        loader.registerCustomWidget(cls)
    widget = loader.load(buffer)
    if widget is None:
        raise RuntimeError(loader.errorString())
    return widget


def fill(panel: QWidget, values: dict) -> None:
    find = lambda name: panel.findChild(QWidget, name)  # noqa: E731
    find("inputVolumeSelector").addItem(values["volume"])
    find("progressBar").setValue(100)
    find("statusLabel").setText(values["status"])
    find("stlFolderButton").setText("  " + values["folder"])
    find("dependenciesFrame").setVisible(False)
    for name in ("segmentButton", "refineButton", "exportStlButton"):
        find(name).setEnabled(True)
    segments = find("segmentsTableView").table
    segments.setRowCount(len(values["rows"]))
    palette = [QColor(230, 41, 41), QColor(31, 158, 242), QColor(250, 199, 26)]
    for r, row in enumerate(values["rows"]):
        eye = QTableWidgetItem("")
        eye.setCheckState(Qt.Checked)
        segments.setItem(r, 0, eye)
        color = QTableWidgetItem("")
        color.setBackground(palette[r % len(palette)])
        segments.setItem(r, 1, color)
        segments.setItem(r, 2, QTableWidgetItem(row[1]))
    results: QTableWidget = find("resultsTableView")
    headers = ["ID", "Name", "Volume\n(mm3)", "Max diameter\n(mm)", "Centroid R\n(mm)", "Centroid A\n(mm)",
               "Centroid S\n(mm)", "Confidence"]
    results.setColumnCount(len(headers))
    results.setHorizontalHeaderLabels(headers)
    results.setRowCount(len(values["rows"]))
    results.verticalHeader().setVisible(False)
    results.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
    for r, row in enumerate(values["rows"]):
        for c, value in enumerate(row):
            results.setItem(r, c, QTableWidgetItem(str(value)))
    seeds = find("seedsMarkupsWidget").table
    seeds.setRowCount(len(values["seeds"]))
    for r, row in enumerate(values["seeds"]):
        for c, value in enumerate(row):
            seeds.setItem(r, c, QTableWidgetItem(str(value)))


def main(argv: list[str]) -> int:
    values = dict(DEFAULTS)
    if len(argv) > 1:
        values.update(json.loads(Path(argv[1]).read_text()))
    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    palette = app.palette()
    palette.setColor(QPalette.Window, QColor(239, 239, 239))
    app.setPalette(palette)
    panel = loadPanel()
    fill(panel, values)
    panel.resize(440, panel.sizeHint().height())
    panel.show()
    app.processEvents()
    panel.resize(440, panel.sizeHint().height())
    app.processEvents()
    image = panel.grab()
    if not image.save(str(OUTPUT)):
        raise RuntimeError(f"could not write {OUTPUT}")
    print(f"wrote {OUTPUT} ({image.width()}x{image.height()})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
