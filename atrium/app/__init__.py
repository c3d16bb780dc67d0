"""The composition root: building and running one process from its config."""
