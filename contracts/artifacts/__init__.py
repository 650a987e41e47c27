"""Compiled contract artifacts (ABI + bytecode) from scripts/compile_contracts.py."""
