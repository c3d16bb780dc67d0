"""Server-server API servlets: route groups "federation" and "federation_keys"."""
