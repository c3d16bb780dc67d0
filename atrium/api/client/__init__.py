"""Client-server API servlets, one module per area of the spec."""
