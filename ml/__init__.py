"""PAROMA-MED ml."""
