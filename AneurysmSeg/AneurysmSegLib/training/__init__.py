"""Training: ADAM-layout data, sampling, augmentation, loops for the coarse and fine networks."""
