"""Signed bundles: the format (TUF + OpenSSF model signing), publishing, the trust store,
offline verification of media, and the content-addressed store the payload is copied into.

Specification: bundles/FORMAT.md.
"""
