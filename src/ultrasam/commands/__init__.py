"""CLI verb registration, one module per area (see ``ultrasam.cli``)."""
