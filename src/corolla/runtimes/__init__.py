"""Backends. Each module imports its framework only inside itself; see base.py."""
