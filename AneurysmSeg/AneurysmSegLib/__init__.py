"""AneurysmSegLib: coarse-to-fine segmentation of unruptured cerebral aneurysms in 3D TOF-MRA.

Pure Python (torch, SimpleITK, numpy, scipy, vtk). Only ``scene`` imports Slicer/MRML.
"""

__version__ = "0.1.0"
