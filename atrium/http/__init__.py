"""HTTP plumbing: the JSON resource and router, request parsing, the site."""
