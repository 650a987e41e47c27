"""The site's patient registry: who consented, where their files are, what used them.

Layout (inside the site's store folder)::

    governance/governance.db       patients, files, usage, checkpoints, erasures
    governance/data/<case id>/     the scan, its labels and derived files
    governance/checkpoints/<id>.safetensors   models from before a first use

Every patient gets a random *case id* (16 random bytes, hex) when registered.
Only the ``patients`` table maps the pseudonym to it; file names, the training
data set, logs and every other table use the case id. Erasing a patient deletes
its ``patients`` row (pseudonym and salt), its files and every row keyed by its
case id, with SQLite's ``secure_delete`` on (freed pages are overwritten with
zeros) followed by ``VACUUM`` (the file is rewritten without free pages), so
neither the pseudonym nor the salt survives in the database's bytes. The
rollback journal (``journal_mode=DELETE``) is removed after each commit.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from hashlib import sha256
from pathlib import Path
from typing import Any

import sqlite_utils

from node.errors import StoreCorrupt
from node.governance.errors import PatientExists, PatientUnknown

logger = logging.getLogger(__name__)

CaseId = str
"""A patient's random id inside the site (never the pseudonym)."""


class ConsentState(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"


@dataclass(frozen=True)
class PatientRecord:
    """One registered patient (held in memory only as long as needed).

    Attributes:
        case_id: the random id used everywhere but the ``patients`` table.
        commitment: the 32-byte consent commitment on the ledger.
        purpose: the purpose code it was made for.
        state: consent state.
        registered_at: seconds since the epoch.
        first_checkpoint: id of the model checkpoint from before the patient's
            data was first trained on (None while never used).
        first_step: the site's local step count at that checkpoint.
    """

    case_id: CaseId
    commitment: bytes
    purpose: int
    state: ConsentState
    registered_at: float
    first_checkpoint: str | None
    first_step: int | None


@dataclass(frozen=True)
class StoredFile:
    """A file (or DICOM folder) of a patient, with its SHA-256 at storage time."""

    kind: str
    path: Path
    sha256: str


def file_digest(path: Path) -> str:
    """SHA-256 (hex) of a file, or of a folder's files in sorted relative order."""
    h = sha256()
    paths = [path] if path.is_file() else sorted(p for p in path.rglob("*"))
    for p in paths:
        if p.is_file():
            if p != path:
                h.update(p.relative_to(path).as_posix().encode() + b"\x00")
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()


class PatientRegistry:
    """Patients, their files, their use in training, and erasure records.

    Thread-safe: every method takes one lock (the admin interface and the
    training thread both call it).

    Args:
        folder: the governance folder (created if missing).
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.data = self.folder / "data"
        self.checkpoints = self.folder / "checkpoints"
        for d in (self.folder, self.data, self.checkpoints):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        path = self.folder / "governance.db"
        try:
            conn = sqlite3.connect(path, check_same_thread=False)
            conn.execute("pragma secure_delete = on")
            conn.execute("pragma journal_mode = delete")
            self.db = sqlite_utils.Database(conn)
            self._create_tables()
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(f"{path}: {exc}") from exc

    def _create_tables(self) -> None:
        t = self.db.table
        t("patients").create(
            {
                "case_id": str,
                "pseudonym": str,
                "salt": bytes,
                "commitment": str,
                "purpose": int,
                "state": str,
                "registered_at": float,
                "withdrawn_at": float,
                "first_checkpoint": str,
                "first_step": int,
            },
            pk="case_id",
            not_null={"pseudonym", "salt", "commitment"},
            if_not_exists=True,
        )
        self.db.execute(
            "create unique index if not exists patients_pseudonym "
            "on patients(pseudonym)"
        )
        t("files").create(
            {"case_id": str, "kind": str, "path": str, "sha256": str},
            pk=("case_id", "kind"),
            if_not_exists=True,
        )
        t("usage").create(
            {"case_id": str, "round": int, "digest": str, "step": int, "at": float},
            if_not_exists=True,
        )
        t("checkpoints").create(
            {"id": str, "path": str, "step": int, "created": float},
            pk="id",
            if_not_exists=True,
        )
        t("erasures").create(
            {
                "commitment": str,
                "proof_digest": str,
                "requested_at": float,
                "completed_at": float,
                "files": int,
            },
            pk="commitment",
            if_not_exists=True,
        )
        t("counters").create(
            {"name": str, "value": float}, pk="name", if_not_exists=True
        )

    # ----- patients ----------------------------------------------------------

    def add_patient(
        self, pseudonym: str, salt: bytes, commitment: bytes, purpose: int
    ) -> CaseId:
        """Register a patient with active consent; returns the new case id.

        Raises:
            PatientExists: the pseudonym is already registered.
        """
        case_id = secrets.token_hex(16)
        row = {
            "case_id": case_id,
            "pseudonym": pseudonym,
            "salt": salt,
            "commitment": commitment.hex(),
            "purpose": purpose,
            "state": ConsentState.ACTIVE.value,
            "registered_at": time.time(),
            "withdrawn_at": None,
            "first_checkpoint": None,
            "first_step": None,
        }
        with self._lock, self.db.conn:
            try:
                self.db.table("patients").insert(row)
            except sqlite3.IntegrityError:
                raise PatientExists("the patient is already registered") from None
        return case_id

    def find(self, pseudonym: str) -> PatientRecord:
        """The patient with this pseudonym.

        Raises:
            PatientUnknown: none is registered (or it was erased).
        """
        with self._lock:
            rows = list(
                self.db.query("select * from patients where pseudonym = ?", [pseudonym])
            )
        if not rows:
            raise PatientUnknown("no registered patient has that pseudonym")
        return _record(rows[0])

    def salt_of(self, case_id: CaseId) -> bytes:
        with self._lock:
            row = self.db.table("patients").get(case_id)
        return bytes(row["salt"])

    def patient(self, case_id: CaseId) -> PatientRecord | None:
        with self._lock:
            rows = list(
                self.db.query("select * from patients where case_id = ?", [case_id])
            )
        return _record(rows[0]) if rows else None

    def patients(self) -> list[PatientRecord]:
        """Every registered patient, oldest first."""
        with self._lock:
            rows = list(self.db.query("select * from patients order by registered_at"))
        return [_record(r) for r in rows]

    def set_state(self, case_id: CaseId, state: ConsentState) -> None:
        with self._lock, self.db.conn:
            self.db.table("patients").update(
                case_id, {"state": state.value, "withdrawn_at": time.time()}
            )

    def is_active(self, case_id: CaseId, *, max_age_s: float | None = None) -> bool:
        """True if the case is registered with active consent (and young enough)."""
        with self._lock:
            rows = list(
                self.db.query(
                    "select state, registered_at from patients where case_id = ?",
                    [case_id],
                )
            )
        if not rows or rows[0]["state"] != ConsentState.ACTIVE.value:
            return False
        age = time.time() - rows[0]["registered_at"]
        return max_age_s is None or age <= max_age_s

    # ----- files -------------------------------------------------------------

    def case_folder(self, case_id: CaseId) -> Path:
        return self.data / case_id

    def store_file(self, case_id: CaseId, kind: str, source: Path) -> StoredFile:
        """Copy a scan, label map or derived file into the case's folder.

        The copy is named by ``kind`` and the source's suffixes (``.nii.gz``),
        never by the source's name, which might carry an identifier.
        """
        suffix = "".join(source.suffixes[-2:]) if source.is_file() else ""
        folder = self.case_folder(case_id)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{kind}{suffix}"
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source, target)
        return self.note_file(case_id, kind, target)

    def note_file(self, case_id: CaseId, kind: str, path: Path) -> StoredFile:
        """Remember a file written into the case's folder (e.g. an analysis)."""
        stored = StoredFile(kind, path, file_digest(path))
        row = {"case_id": case_id, "kind": kind, "path": str(path)}
        with self._lock, self.db.conn:
            self.db.table("files").upsert(
                {**row, "sha256": stored.sha256}, pk=("case_id", "kind")
            )
        return stored

    def files(self, case_id: CaseId) -> list[StoredFile]:
        with self._lock:
            rows = list(
                self.db.query(
                    "select * from files where case_id = ? order by kind", [case_id]
                )
            )
        return [StoredFile(r["kind"], Path(r["path"]), r["sha256"]) for r in rows]

    def file_path(self, case_id: CaseId, kind: str) -> Path | None:
        for f in self.files(case_id):
            if f.kind == kind:
                return f.path
        return None

    # ----- training use ------------------------------------------------------

    def counter(self, name: str) -> float:
        with self._lock:
            rows = list(
                self.db.query("select value from counters where name = ?", [name])
            )
        return float(rows[0]["value"]) if rows else 0.0

    def set_counter(self, name: str, value: float) -> None:
        with self._lock, self.db.conn:
            self.db.table("counters").upsert({"name": name, "value": value}, pk="name")

    def add_checkpoint(self, path: Path, step: int) -> str:
        checkpoint_id = secrets.token_hex(8)
        row = {"id": checkpoint_id, "path": str(path), "step": step}
        with self._lock, self.db.conn:
            self.db.table("checkpoints").insert({**row, "created": time.time()})
        return checkpoint_id

    def checkpoint(self, checkpoint_id: str) -> tuple[Path, int] | None:
        with self._lock:
            rows = list(
                self.db.query("select * from checkpoints where id = ?", [checkpoint_id])
            )
        return (Path(rows[0]["path"]), int(rows[0]["step"])) if rows else None

    def checkpoint_path(self) -> Path:
        return self.checkpoints / f"{secrets.token_hex(8)}.safetensors"

    def mark_first_use(self, case_id: CaseId, checkpoint_id: str, step: int) -> None:
        with self._lock, self.db.conn:
            self.db.execute(
                "update patients set first_checkpoint = ?, first_step = ? "
                "where case_id = ? and first_checkpoint is null",
                [checkpoint_id, step, case_id],
            )

    def note_usage(self, case_ids: list[CaseId], round_: int, digest: bytes) -> None:
        rows = [
            {
                "case_id": c,
                "round": round_,
                "digest": digest.hex(),
                "step": int(self.counter("steps")),
                "at": time.time(),
            }
            for c in case_ids
        ]
        with self._lock, self.db.conn:
            self.db.table("usage").insert_all(rows)

    def usage(self, case_id: CaseId) -> list[dict[str, Any]]:
        """The model versions (round, digest, step) trained on this case."""
        with self._lock:
            return list(
                self.db.query(
                    "select round, digest, step, at from usage where case_id = ? "
                    "order by rowid",
                    [case_id],
                )
            )

    # ----- erasure -----------------------------------------------------------

    def delete_patient(self, case_id: CaseId) -> list[StoredFile]:
        """Delete the case's files, then every row of it; returns the deleted files.

        The files go first: if the process dies midway, the rows still point
        to what is left and a second erasure finishes the job.
        """
        files = self.files(case_id)
        shutil.rmtree(self.case_folder(case_id), ignore_errors=True)
        for f in files:
            if f.path.exists():
                if f.path.is_dir():
                    shutil.rmtree(f.path)
                else:
                    f.path.unlink()
        with self._lock:
            with self.db.conn:
                self.db.execute("delete from files where case_id = ?", [case_id])
                self.db.execute("delete from usage where case_id = ?", [case_id])
                self.db.execute("delete from patients where case_id = ?", [case_id])
            # Rewrite the file without free pages (secure_delete already zeroed
            # them; VACUUM also drops them from the file's size).
            self.db.execute("vacuum")
        return files

    def drop_unused_checkpoints(self) -> None:
        """Delete pre-use checkpoints no remaining patient refers to."""
        with self._lock:
            rows = list(
                self.db.query(
                    "select id, path from checkpoints where id not in "
                    "(select first_checkpoint from patients "
                    "where first_checkpoint is not null)"
                )
            )
            with self.db.conn:
                for row in rows:
                    Path(row["path"]).unlink(missing_ok=True)
                    self.db.execute("delete from checkpoints where id = ?", [row["id"]])

    def note_erasure_requested(self, commitment: bytes) -> None:
        row = {"commitment": commitment.hex(), "requested_at": time.time()}
        with self._lock, self.db.conn:
            self.db.table("erasures").upsert(row, pk="commitment")

    def note_erasure_completed(
        self, commitment: bytes, proof_digest: bytes, files: int
    ) -> None:
        row = {
            "commitment": commitment.hex(),
            "proof_digest": proof_digest.hex(),
            "completed_at": time.time(),
            "files": files,
        }
        with self._lock, self.db.conn:
            self.db.table("erasures").upsert(row, pk="commitment")

    def erasures(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db.query("select * from erasures order by requested_at"))

    def close(self) -> None:
        with self._lock:
            self.db.close()


def _record(row: dict[str, Any]) -> PatientRecord:
    return PatientRecord(
        case_id=row["case_id"],
        commitment=bytes.fromhex(row["commitment"]),
        purpose=int(row["purpose"]),
        state=ConsentState(row["state"]),
        registered_at=float(row["registered_at"]),
        first_checkpoint=row["first_checkpoint"],
        first_step=None if row["first_step"] is None else int(row["first_step"]),
    )
