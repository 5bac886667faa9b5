"""The service layer: one function per user action, called by both the CLI and the console.

Each takes an open Appliance and an authenticated Session, checks the permission, does the
work and writes its audit event in the same transaction.
"""
