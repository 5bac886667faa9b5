"""Sovereign clinical-AI appliance: core library (headless; never imports Textual)."""

__version__ = "0.1.0"
