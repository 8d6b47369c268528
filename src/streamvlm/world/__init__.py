"""The procedural stream world: a deterministic match with exact per-second commentary."""
