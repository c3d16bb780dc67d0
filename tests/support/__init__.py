"""Shared test fixtures and builders (events, rooms)."""
