"""ptfuzz: replay and fuzz operation traces against a model of Linux page-table management."""
__version__ = "0.1.0"
