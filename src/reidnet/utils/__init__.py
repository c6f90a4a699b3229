"""Generic helpers with no knowledge of re-identification: atomic file writes, devices, seeds."""
