"""Seeded studies: each writes CSV + PNG and prints a table (``blockemu experiment NAME``)."""
