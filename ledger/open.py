"""Opening a federation ledger (:func:`open_ledger`) and deploying one."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from pathlib import Path

from eth_account import Account
from eth_utils.address import to_checksum_address

from contracts.build import load_artifact
from ledger.api import Ledger
from ledger.chains import (
    FAUCET_KEY,
    Chain,
    EmbeddedChain,
    RpcChain,
    acquire_embedded,
    read_meta,
    release_embedded,
    write_meta,
)
from ledger.client import Web3Ledger, revert_reason
from ledger.errors import LedgerConfigError, LedgerError, TransactionReverted
from ledger.index import EventIndex

log = logging.getLogger(__name__)

FUND_BELOW = 10**18
"""Top an account up from the faucet when its balance falls below this (wei)."""

FUND_AMOUNT = 10**19
"""Wei sent by the faucet to a new account."""

Founder = tuple[str, str, Sequence[str]]
"""(DID, ledger account address, roles) of a founding member."""


def new_account_key() -> bytes:
    """A fresh 32-byte secp256k1 private key for a ledger account."""
    return secrets.token_bytes(32)


def account_address(account_key: bytes) -> str:
    """The checksummed ``0x`` address of a ledger account key."""
    try:
        return str(Account.from_key(account_key).address)
    except (ValueError, TypeError) as exc:
        raise LedgerConfigError(
            "account_key: expected a 32-byte secp256k1 private key"
        ) from exc


def _is_url(spec: str | Path) -> bool:
    return isinstance(spec, str) and spec.startswith(("http://", "https://"))


def _fund(chain: Chain, funder_key: bytes, address: str) -> None:
    """Send ether from ``funder_key`` to ``address`` if its balance is low."""
    w3 = chain.w3
    if int(w3.eth.get_balance(address)) >= FUND_BELOW:  # type: ignore[arg-type]
        return
    funder = Account.from_key(funder_key)
    base = int(w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
    tx = {
        "to": address,
        "value": FUND_AMOUNT,
        "gas": 21_000,
        "nonce": int(w3.eth.get_transaction_count(funder.address, "pending")),
        "chainId": chain.chain_id,
        "maxFeePerGas": 2 * base + 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    (tx_hash,) = chain.submit([bytes(funder.sign_transaction(tx).raw_transaction)])
    if int(chain.receipt(tx_hash)["status"]) != 1:
        raise LedgerError(f"funding {address} failed")


def _connect(spec: str | Path, retries: int, backoff: float) -> Chain:
    if _is_url(spec):
        return RpcChain(str(spec), retries=retries, backoff=backoff)
    if isinstance(spec, str) and "://" in spec:
        raise LedgerConfigError(
            f"ledger: expected a folder or an http(s):// URL, got {spec!r}"
        )
    return acquire_embedded(Path(spec))


def _release(chain: Chain) -> None:
    if isinstance(chain, EmbeddedChain):
        release_embedded(chain)
    else:
        chain.close()


def deploy_federation(
    spec: str | Path,
    *,
    deployer_key: bytes,
    founders: Sequence[Founder],
    threshold: int,
    faucet_key: bytes | None = None,
    index_path: Path | None = None,
    retries: int = 5,
    backoff: float = 0.2,
) -> Ledger:
    """Deploy the federation contract with its founders; returns the deployer's handle.

    Args:
        spec: an embedded ledger folder (must hold no deployment yet) or an
            ``http(s)://`` JSON-RPC URL.
        deployer_key: the account key that sends the deployment (usually a
            founder's own key, so its writes are a member's).
        founders: ``(did, account, roles)`` of each founding member, admitted
            without a vote.
        threshold: k, votes needed to admit or remove a member (1..len(founders)).
        faucet_key: rpc only: a funded key that tops up the deployer (anvil's
            dev account); not needed on free-gas networks.
        index_path: rpc only: SQLite index file (None: in memory).
        retries: rpc only: retries after a connection failure.
        backoff: rpc only: first wait between retries, seconds.

    Raises:
        LedgerConfigError: bad founders or threshold, or the folder already
            holds a deployment.
        TransactionReverted: the contract refused the founders.
    """
    if not founders:
        raise LedgerConfigError("founders: expected at least one founding member")
    if not 1 <= threshold <= len(founders):
        raise LedgerConfigError(
            f"threshold: expected 1..{len(founders)} (the number of founders), "
            f"got {threshold}"
        )
    dids = [str(f[0]) for f in founders]
    try:
        accounts = [to_checksum_address(f[1]) for f in founders]
    except ValueError as exc:
        raise LedgerConfigError(f"founders: bad account address: {exc}") from exc
    roles = [list(f[2]) for f in founders]
    if not _is_url(spec):
        folder = Path(spec)
        if read_meta(folder) is not None:
            raise LedgerConfigError(f"{folder}: already holds a federation deployment")
    chain = _connect(spec, retries, backoff)
    try:
        deployer = Account.from_key(deployer_key)
        funder = FAUCET_KEY if isinstance(chain, EmbeddedChain) else faucet_key
        if funder is not None:
            _fund(chain, funder, deployer.address)
        artifact = load_artifact("Federation")
        factory = chain.w3.eth.contract(
            abi=artifact["abi"], bytecode=artifact["bytecode"]
        )
        ctor = factory.constructor(dids, accounts, roles, threshold)
        try:
            gas = int(ctor.estimate_gas({"from": deployer.address}) * 1.2)
        except Exception as exc:
            reason = revert_reason(exc)
            if reason is None:
                raise
            raise TransactionReverted(reason, operation="deploy") from exc
        base = int(chain.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
        tip = 0 if base == 0 else 10**9
        tx = ctor.build_transaction(
            {
                "from": deployer.address,
                "nonce": int(
                    chain.w3.eth.get_transaction_count(deployer.address, "pending")
                ),
                "gas": gas,
                "chainId": chain.chain_id,
                "maxFeePerGas": 2 * base + tip,
                "maxPriorityFeePerGas": tip,
            }
        )
        (tx_hash,) = chain.submit(
            [bytes(deployer.sign_transaction(tx).raw_transaction)]
        )
        receipt = chain.receipt(tx_hash)
        if int(receipt["status"]) != 1:
            raise TransactionReverted("deployment failed", operation="deploy")
        address = str(receipt["contractAddress"])
        block = int(receipt["blockNumber"])
        log.info("federation deployed at %s (block %s)", address, block)
        if isinstance(chain, EmbeddedChain):
            write_meta(
                chain.folder, {"contract_address": address, "deploy_block": block}
            )
    except BaseException:
        _release(chain)
        raise
    _release(chain)
    return open_ledger(
        spec,
        account_key=deployer_key,
        contract_address=address,
        index_path=index_path,
        deploy_block=block,
        retries=retries,
        backoff=backoff,
    )


def open_ledger(
    spec: str | Path,
    *,
    account_key: bytes | None = None,
    contract_address: str | None = None,
    index_path: Path | None = None,
    deploy_block: int = 0,
    faucet_key: bytes | None = None,
    retries: int = 5,
    backoff: float = 0.2,
) -> Ledger:
    """Open a deployed federation ledger.

    Args:
        spec: an embedded ledger folder made by :func:`deploy_federation`, or
            an ``http(s)://`` JSON-RPC URL.
        account_key: the secp256k1 key that signs this handle's writes (None:
            read-only). On the embedded chain it is funded automatically.
        contract_address: rpc: the federation contract (required); embedded:
            read from the folder's ``ledger.json`` when None.
        index_path: rpc: the SQLite event index file (None: in memory, rebuilt
            by the first query); embedded: always ``<folder>/index.sqlite``.
        deploy_block: rpc: the deployment's block, where indexing starts.
        faucet_key: rpc: a funded key that tops up ``account_key``'s account
            (anvil's dev account); not needed on free-gas networks such as a
            Besu consortium chain.
        retries: rpc: retries after a connection failure.
        backoff: rpc: first wait between retries, seconds (doubles each time).

    Raises:
        LedgerConfigError: no deployment in the folder, no contract at the address.
        LedgerUnreachable: the endpoint did not answer.
    """
    if account_key is not None:
        account_address(account_key)
    if not _is_url(spec):
        meta = read_meta(Path(spec))
        if meta is None:
            raise LedgerConfigError(
                f"{spec}: no federation deployment here (expected ledger.json; "
                "run deploy_federation first)"
            )
        contract_address = str(meta["contract_address"])
        deploy_block = int(meta["deploy_block"])
        index_path = Path(spec) / "index.sqlite"
    elif contract_address is None:
        raise LedgerConfigError(
            "contract_address: required for a JSON-RPC ledger (the address the "
            "founders published after deployment)"
        )
    chain = _connect(spec, retries, backoff)
    try:
        if account_key is not None:
            funder = FAUCET_KEY if isinstance(chain, EmbeddedChain) else faucet_key
            if funder is not None:
                if isinstance(chain, EmbeddedChain):
                    with chain.lock:
                        _fund(chain, funder, account_address(account_key))
                else:
                    _fund(chain, funder, account_address(account_key))
        index = EventIndex(
            index_path, chain_id=chain.chain_id, contract=contract_address
        )
        return Web3Ledger(
            chain,
            contract_address,
            index,
            account_key=account_key,
            deploy_block=deploy_block,
        )
    except BaseException:
        _release(chain)
        raise
