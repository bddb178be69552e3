"""The rlpt version (core layer: every module may read it without importing the package root)."""

__version__ = "0.1.0"
