"""Pure lifecycle logic: (object, observed world) -> (desired resources, new status)."""
