"""pytest hooks and default fixtures (being written)."""
