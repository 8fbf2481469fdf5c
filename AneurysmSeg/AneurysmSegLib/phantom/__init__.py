"""The synthetic TOF-MRA generator with ground truth (training data, tests, benchmarks).

A development tool: not installed into Slicer, and nothing of the inference path imports it."""
