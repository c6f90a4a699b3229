"""One router per resource: datasets, experiments, jobs."""
