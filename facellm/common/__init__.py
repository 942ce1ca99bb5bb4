"""Shared basics: one error type and CLI wrapper, crash-safe files, images, the append-only ledger,
ShareGPT records."""
