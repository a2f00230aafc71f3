"""gatewatch."""
