"""The pipeline's stages after preprocessing: detect (coarse), refine (fine), measure, morphology (neck,
dome, ratios, irregularity) and location (site)."""
