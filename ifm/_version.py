"""The package's version: a constant every stage may read (records and bundles name it)."""
__version__ = "0.1.0"
