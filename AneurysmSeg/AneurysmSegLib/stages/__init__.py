"""The pipeline's stages after preprocessing: detect (coarse), refine (fine), measure."""
