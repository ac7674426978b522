"""Fuzz harness for every parser of outside input: see fuzz/README.md and fuzz.engine."""
