"""Pieces every PAROMA-MED package shares: the root error and the command-line frame.

Nothing here knows of networks, ledgers or models; every other package may import it.
"""
