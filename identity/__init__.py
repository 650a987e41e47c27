"""PAROMA-MED identity."""
