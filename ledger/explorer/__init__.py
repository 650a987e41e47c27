"""paroma-explorer: the auditors' read-only view of the federation's ledger.

* :mod:`ledger.explorer.query`: event filters and keyset paging on the index.
* :mod:`ledger.explorer.source`: what the views show, read from a :class:`Ledger`.
* :mod:`ledger.explorer.auth`: sign-in with an auditor credential, sessions.
* :mod:`ledger.explorer.digest`: a model file's digest as the node records it.
* :mod:`ledger.explorer.server`: the JSON API and the static page (loopback only).
* :mod:`ledger.explorer.cli`: the ``paroma-explorer`` command.

See docs/explorer.md.
"""
