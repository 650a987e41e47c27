"""PAROMA-MED simulator."""
