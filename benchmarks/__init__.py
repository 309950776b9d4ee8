"""Benchmarks of robustbench-dc (scripts; not part of the installed package)."""
