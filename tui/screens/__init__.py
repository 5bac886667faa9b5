"""Console screens: login, dashboard, audit trail (and the export dialog)."""
