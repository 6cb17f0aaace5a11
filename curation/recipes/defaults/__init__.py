"""Default recipes of the dataset families (package data: one YAML per family)."""
