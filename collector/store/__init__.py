"""Storage backends behind one interface: SQLite (embedded default) and PostgreSQL."""
