"""Small building blocks shared by every layer: caches, async helpers, the clock."""
