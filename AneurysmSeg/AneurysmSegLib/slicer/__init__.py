"""The only package that imports slicer/MRML: scene conversion and the runners the Slicer module uses."""
