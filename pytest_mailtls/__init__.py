"""pytest-mailtls: test mail clients against real servers across a grid of TLS policies."""

__version__ = "0.1.0"
