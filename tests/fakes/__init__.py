"""Test doubles of the gateway's collaborators, kept out of the installed packages: the
router install carries no code that only tests run (docs/decisions.md, 2026-12-06)."""
