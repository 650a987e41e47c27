"""Fixtures: a fresh federation on each backend (embedded folder, anvil)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ledger import account_address, deploy_federation, new_account_key, open_ledger
from ledger.api import Ledger

REPO = Path(__file__).resolve().parents[2]
ANVIL = REPO / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
# anvil's first dev account (derived from its public test mnemonic): funds
# the test accounts on the rpc backend.
ANVIL_KEY = bytes.fromhex(
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
)

DID_A = "did:key:z6MkFounderA"
DID_B = "did:key:z6MkFounderB"
DID_C = "did:key:z6MkFounderC"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """An anvil process on 127.0.0.1, stopped by its own pid."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(ANVIL), "--host", "127.0.0.1", "--port", str(self.port), "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def anvil():
    if not ANVIL.is_file():
        pytest.skip("anvil binary missing: run `npm ci`")
    node = Anvil()
    yield node
    node.stop()


@dataclass
class Fed:
    """Three founders (k=2) on one backend, each with its own handle."""

    backend: str
    spec: str | Path
    a: Ledger
    b: Ledger
    c: Ledger
    keys: dict[str, bytes]
    open_kwargs: dict[str, Any]

    def open(self, key: bytes | None = None, **extra) -> Ledger:
        return open_ledger(self.spec, account_key=key, **{**self.open_kwargs, **extra})


def _make_fed(
    backend: str, spec: str | Path, tmp_path: Path, faucet_key: bytes | None = None
) -> Fed:
    keys = {d: new_account_key() for d in (DID_A, DID_B, DID_C)}
    founders = [(d, account_address(k), ["site"]) for d, k in keys.items()]
    a = deploy_federation(
        spec,
        deployer_key=keys[DID_A],
        founders=founders,
        threshold=2,
        faucet_key=faucet_key,
        index_path=tmp_path / "a.sqlite" if backend == "rpc" else None,
    )
    kwargs: dict[str, Any] = {}
    if backend == "rpc":
        kwargs = {
            "contract_address": a.contract_address,
            "faucet_key": faucet_key,
            "deploy_block": a.events()[0].block,
        }
    b = open_ledger(spec, account_key=keys[DID_B], **kwargs)
    c = open_ledger(spec, account_key=keys[DID_C], **kwargs)
    return Fed(backend, spec, a, b, c, keys, kwargs)


@pytest.fixture(params=["embedded", pytest.param("rpc", marks=pytest.mark.anvil)])
def fed(request, tmp_path):
    if request.param == "embedded":
        f = _make_fed("embedded", tmp_path / "ledger", tmp_path)
    else:
        node = request.getfixturevalue("anvil")
        f = _make_fed("rpc", node.url, tmp_path, faucet_key=ANVIL_KEY)
    yield f
    for handle in (f.a, f.b, f.c):
        handle.close()
