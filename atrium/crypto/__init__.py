"""Hashes, signatures and signing keys: everything that touches cryptography."""
