"""The core: errors, geometry, plain-data results, the model manifest, model loading and the one pipeline."""
