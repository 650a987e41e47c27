"""Event filters and keyset paging over the ledger's SQLite event index.

The ledger's own :meth:`ledger.api.Ledger.events` pages with ``OFFSET``, which
makes SQLite step over every skipped row: the last page of 100,000 events costs
as much as reading them all. The explorer pages by key instead: events are
ordered by ``(timestamp, block, log_index)`` (chain order: a block's timestamp
is greater than its parent's, Yellow Paper §4.3.4), a page ends at one such
key, and the next page starts strictly after (or, newest first, before) it.
That key is the tail of each of the index's indexes (``events_time``,
``events_kind``, ``events_member``), so a page is one range scan of an index,
time filters included, whatever its depth.

The explorer reads the index file (schema in :mod:`ledger.index`) through its
own read-only connection; the ledger client stays the only writer, and the
explorer calls :meth:`Ledger.sync` before reading so the file is current.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ledger.api import Event, EventKind
from ledger.commitments import parse_commitment
from ledger.errors import MalformedDigest
from ledger.explorer.errors import BadQuery

MAX_PAGE = 1000
"""The largest page a caller may ask for (events)."""

DEFAULT_PAGE = 50
"""Events per page when the caller does not say."""

KINDS = tuple(str(k) for k in EventKind)
"""Every event kind, as the index stores it."""


def parse_time(text: str, name: str) -> int:
    """Seconds since the epoch from an integer, an ISO 8601 date or date-time.

    A date means its midnight UTC; a date-time without an offset is UTC.

    Raises:
        BadQuery: none of these forms (the message names ``name``).
    """
    value = text.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadQuery(
            f"{name}: expected seconds since the epoch or an ISO 8601 time such as "
            f"2026-01-31 or 2026-01-31T12:00:00Z, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def iso_time(seconds: int) -> str:
    """``2026-01-31T12:00:00Z`` for seconds since the epoch."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_kind(text: str) -> str:
    """An event kind's name, checked.

    Raises:
        BadQuery: not one of :class:`ledger.api.EventKind`'s values.
    """
    if text not in KINDS:
        raise BadQuery(f"kind: expected one of {', '.join(KINDS)}, got {text!r}")
    return text


def parse_member(text: str) -> str:
    """A member DID (or a ``0x`` account for events of non-member senders).

    Raises:
        BadQuery: neither form.
    """
    value = text.strip()
    if value.startswith("did:") and len(value) <= 512:
        return value
    if value.startswith("0x") and len(value) == 42:
        return value
    raise BadQuery(f"member: expected a DID 'did:...', got {text!r}")


def parse_digest(text: str, name: str = "commitment") -> str:
    """A 32-byte commitment/digest as the index stores it: ``0x`` lowercase hex.

    Raises:
        BadQuery: not 64 hex digits.
    """
    try:
        return "0x" + parse_commitment(text.strip(), name).hex()
    except MalformedDigest as exc:
        raise BadQuery(str(exc)) from None


@dataclass(frozen=True)
class EventFilter:
    """Filters on the event index; each set field must match (AND).

    Attributes:
        kind: an :class:`EventKind` value.
        member: the DID of the member whose account wrote the event.
        since: only events at or after this time (seconds since the epoch).
        until: only events before this time (seconds since the epoch).
        commitment: ``0x`` hex of the commitment/digest/id the event is about.
    """

    kind: str | None = None
    member: str | None = None
    since: int | None = None
    until: int | None = None
    commitment: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> EventFilter:
        """Parse filters from query parameters or options (empty values ignored).

        Raises:
            BadQuery: a value is malformed or ``since`` is not before ``until``.
        """

        def get(key: str) -> str | None:
            value = params.get(key)
            return value if value else None

        kind, member, since, until, commitment = (
            get(k) for k in ("kind", "member", "since", "until", "commitment")
        )
        made = cls(
            kind=None if kind is None else parse_kind(kind),
            member=None if member is None else parse_member(member),
            since=None if since is None else parse_time(since, "since"),
            until=None if until is None else parse_time(until, "until"),
            commitment=None if commitment is None else parse_digest(commitment),
        )
        start, end = made.since, made.until
        if start is not None and end is not None and start >= end:
            raise BadQuery("since: expected a time before until")
        return made

    def where(self) -> tuple[list[str], list[Any]]:
        """SQL conditions (fixed column names) and their bound values."""
        clauses: list[str] = []
        args: list[Any] = []
        for column, op, value in (
            ("kind", "=", self.kind),
            ("member", "=", self.member),
            ("timestamp", ">=", self.since),
            ("timestamp", "<", self.until),
            ("commitment", "=", self.commitment),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                args.append(value)
        return clauses, args


def parse_cursor(text: str) -> tuple[int, int, int]:
    """``(timestamp, block, log_index)`` from a cursor ``"TIMESTAMP.BLOCK.LOG"``.

    Raises:
        BadQuery: not three non-negative integers joined by dots.
    """
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise BadQuery(
            f"cursor: expected TIMESTAMP.BLOCK.LOG_INDEX as a page returned it, "
            f"got {text!r}"
        )
    return int(parts[0]), int(parts[1]), int(parts[2])


def cursor_of(event: Event) -> str:
    """The cursor that continues after (or before) ``event``."""
    return f"{event.timestamp}.{event.block}.{event.log_index}"


def parse_limit(text: str | None) -> int:
    """A page size, 1..MAX_PAGE (DEFAULT_PAGE when None or empty).

    Raises:
        BadQuery: not an integer in range.
    """
    if not text:
        return DEFAULT_PAGE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise BadQuery(f"limit: expected an integer 1..{MAX_PAGE}, got {text!r}")
    return int(text)


def event_json(event: Event) -> dict[str, Any]:
    """An event as the API and ``events --json`` give it."""
    return {
        "kind": str(event.kind),
        "block": event.block,
        "log_index": event.log_index,
        "tx_hash": event.tx_hash,
        "timestamp": event.timestamp,
        "time": iso_time(event.timestamp),
        "member": event.member,
        "commitment": event.commitment,
        "data": event.data,
    }


@dataclass(frozen=True)
class EventPage:
    """One page of events.

    Attributes:
        events: the page, in the order asked for.
        next_cursor: pass as ``cursor`` for the next page; None on the last one.
        total: how many events match the filter in all.
    """

    events: list[Event]
    next_cursor: str | None
    total: int


_COLUMNS = "block, log_index, tx_hash, timestamp, kind, member, commitment, data"
_ASC = " ORDER BY timestamp, block, log_index LIMIT ?"
_DESC = " ORDER BY timestamp DESC, block DESC, log_index DESC LIMIT ?"


def _event(row: tuple[Any, ...]) -> Event:
    return Event(
        kind=EventKind(row[4]),
        block=int(row[0]),
        log_index=int(row[1]),
        tx_hash=str(row[2]),
        timestamp=int(row[3]),
        member=str(row[5]),
        commitment=None if row[6] is None else str(row[6]),
        data=json.loads(row[7]),
    )


class IndexReader:
    """Read-only queries on a ledger event index file, safe across threads."""

    def __init__(self, path: Path) -> None:
        """Open ``path`` read-only (it must exist: the ledger client creates it).

        Raises:
            BadQuery: the file is missing or not an event index.
        """
        if not path.is_file():
            raise BadQuery(f"{path}: no event index here")
        self._lock = threading.Lock()  # one statement at a time on _db
        self._db = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            check_same_thread=False,
            timeout=10.0,
        )
        try:
            self._db.execute("SELECT block FROM events LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise BadQuery(f"{path}: not a ledger event index ({exc})") from None

    def _rows(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args).fetchall())

    def page(
        self,
        flt: EventFilter,
        *,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE,
        newest_first: bool = False,
    ) -> EventPage:
        """One page of matching events, starting after ``cursor``.

        Args:
            flt: the filters.
            cursor: ``next_cursor`` of the previous page (None: the first page).
            limit: events per page, 1..MAX_PAGE.
            newest_first: order by descending ``(timestamp, block, log_index)``.
        """
        clauses, args = flt.where()
        count_sql = "SELECT COUNT(*) FROM events"
        if clauses:
            count_sql += " WHERE " + " AND ".join(clauses)
        total = int(self._rows(count_sql, list(args))[0][0])
        if cursor is not None:
            # Why a row value: SQLite turns (timestamp, block, log_index) > (?,
            # ?, ?) into a seek on the index's key, not a filter over rows.
            op = "<" if newest_first else ">"
            clauses.append(f"(timestamp, block, log_index) {op} (?, ?, ?)")
            args.extend(parse_cursor(cursor))
        sql = f"SELECT {_COLUMNS} FROM events"  # noqa: S608 - fixed names only
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += _DESC if newest_first else _ASC
        rows = self._rows(sql, [*args, limit + 1])
        events = [_event(r) for r in rows[:limit]]
        more = len(rows) > limit
        return EventPage(events, cursor_of(events[-1]) if more else None, total)

    def all(self, flt: EventFilter, *, max_events: int = 100_000) -> list[Event]:
        """Every matching event, oldest first (at most ``max_events``)."""
        clauses, args = flt.where()
        sql = f"SELECT {_COLUMNS} FROM events"  # noqa: S608 - fixed names only
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += _ASC
        return [_event(r) for r in self._rows(sql, [*args, max_events])]

    def of_kinds(self, kinds: list[str], *, max_events: int = 100_000) -> list[Event]:
        """Every event of any of ``kinds``, oldest first (at most ``max_events``)."""
        marks = ", ".join("?" for _ in kinds)
        sql = (
            f"SELECT {_COLUMNS} FROM events WHERE kind IN ({marks}) "  # noqa: S608
            + _ASC
        )
        return [_event(r) for r in self._rows(sql, [*kinds, max_events])]

    def counts(self) -> dict[str, int]:
        """How many events of each kind the index holds."""
        rows = self._rows("SELECT kind, COUNT(*) FROM events GROUP BY kind", [])
        found = {str(k): int(n) for k, n in rows}
        return {k: found.get(k, 0) for k in KINDS}

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()
