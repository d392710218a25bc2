"""Bottom layer: one-line errors, atomic writes, file locks, safe YAML, input guards, fault points."""
