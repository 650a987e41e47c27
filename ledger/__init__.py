"""PAROMA-MED ledger."""
