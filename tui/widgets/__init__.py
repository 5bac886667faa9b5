"""Reusable console widgets; each keeps its own DEFAULT_CSS, screens use the app stylesheet."""
