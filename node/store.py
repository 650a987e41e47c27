"""The site's store: one SQLite database plus a folder of checkpoints.

Layout of the store folder::

    site.db                      rounds, peers, refusals (sqlite-utils)
    checkpoints/round-000012.safetensors

A checkpoint is written atomically (temporary file, fsync, rename, fsync of the
folder: :func:`ml.weights.atomic_write_bytes`) *before* its row is committed,
so the newest row always names a complete file; a file without a row (a crash
between the two steps) is ignored and overwritten later. On restart the site
resumes from the newest round whose file loads.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlite_utils
import torch

from ml.errors import WeightsInvalid
from ml.weights import load_weights, save_weights
from node.errors import StoreCorrupt

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])
KEEP_CHECKPOINTS = 3  # older checkpoint files are deleted (their rows stay)


@dataclass(frozen=True)
class Checkpoint:
    """A saved model state and what it came from.

    Attributes:
        round: the site's round number (increases by one per exchange or
            training step that changed the model).
        state: the weights.
        n_samples: the site's sample count (its averaging weight).
        digest: SHA-256 of the canonical weights (:func:`ml.weights.model_digest`).
    """

    round: int
    state: dict[str, torch.Tensor]
    n_samples: float
    digest: bytes


def _locked(method: _F) -> _F:
    """Run a store method under the store's lock."""

    @functools.wraps(method)
    def wrapper(self: SiteStore, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)


class SiteStore:
    """Rounds, peers and checkpoints of one site (one process, one caller at a time).

    Args:
        folder: the store folder, created if missing.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.checkpoints = self.folder / "checkpoints"
        self.checkpoints.mkdir(exist_ok=True)
        # _lock: one SQLite user at a time (the trio thread or a worker).
        self._lock = threading.RLock()
        try:
            # The daemon calls the store from one worker thread at a time
            # (a limiter of 1), not always the thread that opened it.
            conn = sqlite3.connect(self.folder / "site.db", check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            self._create_tables()
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(f"{self.folder / 'site.db'}: {exc}") from exc

    def _create_tables(self) -> None:
        self.db.table("rounds").create(
            {
                "round": int,
                "digest": str,
                "n_samples": float,
                "parents": str,
                "contributors": str,
                "kind": str,
                "created": float,
                "recorded": int,
            },
            pk="round",
            if_not_exists=True,
        )
        self.db.table("peers").create(
            {"peer_id": str, "did": str, "admitted": int, "last_seen": float},
            pk="peer_id",
            if_not_exists=True,
        )
        self.db.table("refusals").create(
            {"id": int, "did": str, "reason": str, "at": float},
            pk="id",
            if_not_exists=True,
        )

    def checkpoint_path(self, round_: int) -> Path:
        return self.checkpoints / f"round-{round_:06d}.safetensors"

    @_locked
    def save_checkpoint(
        self,
        round_: int,
        state: Mapping[str, torch.Tensor],
        n_samples: float,
        digest: bytes,
        *,
        parents: Sequence[bytes] = (),
        contributors: Sequence[str] = (),
        kind: str = "average",
    ) -> None:
        """Write the weights file atomically, then commit the round's row."""
        save_weights(self.checkpoint_path(round_), state)
        row: dict[str, Any] = {
            "round": round_,
            "digest": digest.hex(),
            "n_samples": float(n_samples),
            "parents": json.dumps([p.hex() for p in parents]),
            "contributors": json.dumps(list(contributors)),
            "kind": kind,
            "created": time.time(),
            "recorded": 0,
        }
        with self.db.conn:
            self.db.table("rounds").upsert(row, pk="round")
        self._prune(round_)

    def _prune(self, newest: int) -> None:
        for path in self.checkpoints.glob("round-*.safetensors"):
            try:
                number = int(path.stem.removeprefix("round-"))
            except ValueError:
                continue
            if number <= newest - KEEP_CHECKPOINTS:
                path.unlink(missing_ok=True)

    @_locked
    def latest_checkpoint(
        self, reference: Mapping[str, torch.Tensor] | None = None
    ) -> Checkpoint | None:
        """The newest round whose file loads and passes the checks, or None."""
        rows = self.db.query("select * from rounds order by round desc limit 10")
        for row in rows:
            path = self.checkpoint_path(int(row["round"]))
            if not path.exists():
                continue
            try:
                state = load_weights(path, reference)
            except WeightsInvalid as exc:
                logger.warning("skipping unreadable checkpoint %s: %s", path, exc)
                continue
            return Checkpoint(
                int(row["round"]),
                state,
                float(row["n_samples"]),
                bytes.fromhex(row["digest"]),
            )
        return None

    @_locked
    def rounds(self) -> list[dict[str, Any]]:
        """Every round's row, oldest first (JSON-friendly)."""
        return list(self.db.query("select * from rounds order by round"))

    @_locked
    def unrecorded_rounds(self) -> list[dict[str, Any]]:
        """Rounds not yet written to the ledger, oldest first."""
        return list(
            self.db.query("select * from rounds where recorded = 0 order by round")
        )

    @_locked
    def mark_recorded(self, round_: int) -> None:
        with self.db.conn:
            self.db.table("rounds").update(round_, {"recorded": 1})

    @_locked
    def note_peer(self, peer_id: str, did: str, admitted: bool) -> None:
        row = {
            "peer_id": peer_id,
            "did": did,
            "admitted": int(admitted),
            "last_seen": time.time(),
        }
        with self.db.conn:
            self.db.table("peers").upsert(row, pk="peer_id")

    @_locked
    def note_refusal(self, did: str, reason: str) -> None:
        with self.db.conn:
            row = {"did": did, "reason": reason, "at": time.time()}
            self.db.table("refusals").insert(row)

    @_locked
    def refusals(self) -> list[dict[str, Any]]:
        return list(self.db.query("select did, reason, at from refusals order by id"))

    @_locked
    def close(self) -> None:
        self.db.close()
