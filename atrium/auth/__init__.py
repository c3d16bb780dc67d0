"""Authorization rules of room versions 1-11 (spec: rooms/vN "Authorization rules").

The public entry points live in :mod:`atrium.auth.rules`.
"""
