"""PAROMA-MED contracts."""
