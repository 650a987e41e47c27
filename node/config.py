"""The site's TOML config (``node.toml`` in the site folder) and its checks.

Every field is checked when the file is read; a bad one raises
:class:`node.errors.ConfigInvalid` naming the field (``averaging.robust``)
and what was expected, which the command prints on one line.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import multiaddr

from node.daemon import AveragingSettings, NodeSettings, RobustMode
from node.errors import ConfigInvalid

CONFIG_FILE = "node.toml"
DEFAULT_PORT = 4001
LEDGER_ACCOUNT_SECRET = "ledger-account"  # noqa: S105 (a name, not a secret)
"""Name of the site's ledger account key (secp256k1) among the keystore's secrets."""


@dataclass(frozen=True)
class SiteConfig:
    """The site's config, paths resolved against the site folder.

    Attributes:
        folder: the site folder (holds ``node.toml``).
        name: a display name for the site (no personal data).
        keystore: the encrypted keystore folder (DID key, credentials, and the
            ledger account key as the secret ``LEDGER_ACCOUNT_SECRET``).
        store: the store folder (SQLite, checkpoints, status file).
        data: the training data folder (may not exist: averaging only).
        n_samples: the averaging weight when the site does not train.
        listen: multiaddr to listen on.
        bootstrap: multiaddrs with ``/p2p/`` of peers to dial at start.
        ledger_spec: embedded ledger folder or JSON-RPC URL.
        contract_address: the federation contract (rpc ledgers).
        issuer_dids: DIDs allowed to issue membership credentials.
        status_lists: folder of issuers' status list credentials (JSON).
        policy: the site's policy file (None: every admitted member may act).
        averaging: averaging settings.
        train_steps: local steps between exchanges (0: no training).
        model: ``default`` or ``tiny`` (ml.model.ModelConfig).
        extensions: modules exposing ``extension(config)`` (governance).
    """

    folder: Path
    name: str
    keystore: Path
    store: Path
    data: Path
    n_samples: float
    listen: str
    bootstrap: tuple[str, ...]
    ledger_spec: str
    contract_address: str | None
    issuer_dids: tuple[str, ...]
    status_lists: Path
    policy: Path | None
    averaging: AveragingSettings
    train_steps: int
    model: str
    extensions: tuple[str, ...] = ()

    @property
    def status_file(self) -> Path:
        return self.store / "status.json"

    def node_settings(self) -> NodeSettings:
        return NodeSettings(
            store=self.store,
            listen=self.listen,
            bootstrap=self.bootstrap,
            averaging=self.averaging,
            train_steps=self.train_steps,
            status_file=self.status_file,
        )


def default_config(
    *,
    listen: str = f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}",
    bootstrap: tuple[str, ...] = (),
    ledger: str = "",
    issuers: tuple[str, ...] = (),
    name: str = "site",
) -> dict[str, Any]:
    """The TOML document ``paroma-node init`` writes."""
    return {
        "site": {
            "name": name,
            "keystore": "keystore",
            "store": "store",
            "data": "data",
            "n_samples": 1.0,
        },
        "network": {"listen": listen, "bootstrap": list(bootstrap)},
        "ledger": {
            "spec": ledger,
            "contract_address": "",
        },
        "federation": {"issuer_dids": list(issuers), "status_lists": "status-lists"},
        "policy": {"file": ""},
        "averaging": {
            "period_s": 30.0,
            "robust": "none",
            "tau": 1.0,
            "trim": 1,
            "fp16": False,
            "max_payload_mb": 256,
            "timeout_s": 30.0,
            "retries": 2,
        },
        "training": {"steps_per_round": 0, "model": "default"},
        "extensions": {"modules": []},
    }


class _Fields:
    """Typed access to a TOML table that names the field in every error."""

    def __init__(self, document: dict[str, Any], table: str) -> None:
        value = document.get(table, {})
        if not isinstance(value, dict):
            raise ConfigInvalid(f"config field {table!r} must be a table")
        self.values = value
        self.table = table

    def _get(self, name: str, default: Any) -> tuple[str, Any]:
        return f"{self.table}.{name}", self.values.get(name, default)

    def string(self, name: str, default: str | None = None) -> str:
        field, value = self._get(name, default)
        if not isinstance(value, str):
            raise ConfigInvalid(f"config field {field!r} must be a string")
        return value

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        field, value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigInvalid(f"config field {field!r} must be a number")
        if value < minimum:
            raise ConfigInvalid(f"config field {field!r} must be >= {minimum}")
        return float(value)

    def integer(self, name: str, default: int, minimum: int = 0) -> int:
        field, value = self._get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigInvalid(f"config field {field!r} must be an integer")
        if value < minimum:
            raise ConfigInvalid(f"config field {field!r} must be >= {minimum}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        field, value = self._get(name, default)
        if not isinstance(value, bool):
            raise ConfigInvalid(f"config field {field!r} must be true or false")
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        field, value = self._get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigInvalid(f"config field {field!r} must be a list of strings")
        return tuple(value)

    def multiaddr(self, value: str, field: str, *, peer: bool) -> str:
        try:
            parsed = multiaddr.Multiaddr(value)
        except Exception as exc:
            raise ConfigInvalid(
                f"config field {field!r}: {value!r} is not a multiaddr"
            ) from exc
        if peer and "/p2p/" not in str(parsed):
            raise ConfigInvalid(
                f"config field {field!r}: {value!r} lacks /p2p/<peer id>"
            )
        if not peer and "/tcp/" not in str(parsed):
            raise ConfigInvalid(f"config field {field!r}: {value!r} is not TCP")
        return value


def parse_config(document: dict[str, Any], folder: Path) -> SiteConfig:
    """Check a parsed TOML document and resolve its paths against ``folder``."""
    site = _Fields(document, "site")
    network = _Fields(document, "network")
    ledger = _Fields(document, "ledger")
    federation = _Fields(document, "federation")
    policy = _Fields(document, "policy")
    averaging = _Fields(document, "averaging")
    training = _Fields(document, "training")
    extensions = _Fields(document, "extensions")

    listen = network.multiaddr(
        network.string("listen", f"/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"),
        "network.listen",
        peer=False,
    )
    bootstrap = tuple(
        network.multiaddr(a, "network.bootstrap", peer=True)
        for a in network.strings("bootstrap")
    )
    robust_text = averaging.string("robust", "none")
    try:
        robust = RobustMode(robust_text)
    except ValueError:
        choices = ", ".join(m.value for m in RobustMode)
        raise ConfigInvalid(
            f"config field 'averaging.robust' must be one of {choices}, "
            f"got {robust_text!r}"
        ) from None
    issuers = federation.strings("issuer_dids")
    for did in issuers:
        if not did.startswith("did:"):
            raise ConfigInvalid(
                f"config field 'federation.issuer_dids': {did!r} is not a DID"
            )
    model = training.string("model", "default")
    if model not in ("default", "tiny"):
        raise ConfigInvalid("config field 'training.model' must be default or tiny")
    settings = AveragingSettings(
        period_s=averaging.number("period_s", 30.0),
        robust=robust,
        tau=averaging.number("tau", 1.0, minimum=1e-12),
        trim=averaging.integer("trim", 1),
        fp16=averaging.boolean("fp16", False),
        max_payload_bytes=int(averaging.number("max_payload_mb", 256, 0.001) * 2**20),
        step_timeout_s=averaging.number("timeout_s", 30.0, minimum=0.1),
        retries=averaging.integer("retries", 2),
    )
    if "account_key_file" in ledger.values:
        # The key once lay in clear in this file; it is sealed in the keystore
        # now, and a stale field must not suggest otherwise.
        raise ConfigInvalid(
            "config field 'ledger.account_key_file' is no longer read: the ledger "
            "account key is sealed in the keystore (remove the field and the file)"
        )
    policy_file = policy.string("file", "")
    contract = ledger.string("contract_address", "")
    return SiteConfig(
        folder=folder,
        name=site.string("name", "site"),
        keystore=folder / site.string("keystore", "keystore"),
        store=folder / site.string("store", "store"),
        data=folder / site.string("data", "data"),
        n_samples=site.number("n_samples", 1.0, minimum=1e-9),
        listen=listen,
        bootstrap=bootstrap,
        ledger_spec=ledger.string("spec", ""),
        contract_address=contract or None,
        issuer_dids=issuers,
        status_lists=folder / federation.string("status_lists", "status-lists"),
        policy=folder / policy_file if policy_file else None,
        averaging=settings,
        train_steps=training.integer("steps_per_round", 0),
        model=model,
        extensions=extensions.strings("modules"),
    )


def load_config(folder: Path | str) -> SiteConfig:
    """Read and check ``<folder>/node.toml``.

    Raises:
        ConfigInvalid: missing file, bad TOML, or a bad field (named).
    """
    root = Path(folder)
    path = root / CONFIG_FILE
    if not path.exists():
        raise ConfigInvalid(f"no {CONFIG_FILE} in {root} (run 'paroma-node init')")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigInvalid(f"{path} is not valid TOML: {exc}") from exc
    return parse_config(document, root)
