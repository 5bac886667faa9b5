"""Users, roles, authentication and sessions."""
