"""Numbered schema migrations: ``NNNN_description.sql`` applied in order.

A file named ``NNNN_description.postgres.sql`` or ``.sqlite.sql`` replaces the
plain file for that engine only, where the dialects cannot share one text.
"""
