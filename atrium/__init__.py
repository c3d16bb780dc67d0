"""Atrium: a Matrix homeserver that runs as one process or as a master plus workers."""

__version__ = "0.1.0"
