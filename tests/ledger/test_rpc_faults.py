"""An unreachable endpoint: a clear error, retries, and no queued write lost."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from ledger import EventKind, open_ledger
from ledger.errors import LedgerConfigError, LedgerUnreachable

from .conftest import ANVIL_KEY, DID_A, _make_fed, free_port

pytestmark = pytest.mark.anvil


class Proxy:
    """A TCP relay 127.0.0.1:port -> anvil that can be cut and restored."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(16)
        self.listener.settimeout(0.02)  # so the accept loop sees stop() promptly
        self.running = True
        self.thread = threading.Thread(target=self._accept, args=(self.listener,))
        self.thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while self.running:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pipe, args=(src, dst), daemon=True
                ).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        assert self.listener is not None and self.thread is not None
        self.running = False
        self.thread.join()
        self.listener.close()
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.conns.clear()


def test_closed_port_is_unreachable_after_retries(monkeypatch):
    # The backoff is checked through the waits the client asks for, not by
    # timing them (the machine is shared): the waits are recorded, not slept.
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    with pytest.raises(LedgerUnreachable, match="unreachable") as info:
        open_ledger(
            f"http://127.0.0.1:{free_port()}",
            contract_address="0x" + "11" * 20,
            retries=3,
            backoff=0.05,
        )
    assert "4 attempts" in str(info.value)
    assert waits == [0.05, 0.1, 0.2]  # exponential: doubles after each failure


def test_rpc_needs_contract_address_and_a_contract(anvil):
    with pytest.raises(LedgerConfigError, match="contract_address"):
        open_ledger(anvil.url)
    with pytest.raises(LedgerConfigError, match="no federation contract"):
        open_ledger(anvil.url, contract_address="0x" + "22" * 20)


def test_queued_writes_survive_an_outage(anvil, tmp_path):
    fed = _make_fed("rpc", anvil.url, tmp_path, faucet_key=ANVIL_KEY)
    proxy = Proxy(anvil.port)
    proxy.start()
    site = open_ledger(
        f"http://127.0.0.1:{proxy.port}",
        account_key=fed.keys[DID_A],
        contract_address=fed.a.contract_address,
        deploy_block=fed.open_kwargs["deploy_block"],
        retries=2,
        backoff=0.01,
    )
    try:
        commitments = [bytes([i]) * 32 for i in range(1, 4)]
        with pytest.raises(LedgerUnreachable), site.batch():
            for c in commitments:
                site.register_consent(c, 9, 0)
            proxy.stop()  # the endpoint goes away before the batch is sent
        assert site.pending == 3
        with pytest.raises(LedgerUnreachable):
            site.flush()
        assert site.pending == 3

        proxy.start()
        receipts = site.flush()
        assert len(receipts) == 3 and site.pending == 0
        got = [e.commitment for e in site.events(EventKind.CONSENT_REGISTERED)]
        assert got == ["0x" + c.hex() for c in commitments]
        assert fed.b.consent_active(commitments[2])
    finally:
        site.close()
        proxy.stop()
        for handle in (fed.a, fed.b, fed.c):
            handle.close()
