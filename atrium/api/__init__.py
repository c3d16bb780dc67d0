"""HTTP APIs: servlets that parse, check and call handlers.

``client/`` is the client-server API; each module registers its routes with
``register_servlets(hs, router)`` and names the route group (see
atrium/app/routes.py) that decides which process type serves it.
"""
