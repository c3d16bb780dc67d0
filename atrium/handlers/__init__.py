"""Handlers: the logic behind each API, shared by every process role.

A handler receives the collaborators it needs (stores, the event sender, the
notifier...) from the composition root in ``atrium/app``; it never asks which
process it runs in.
"""
