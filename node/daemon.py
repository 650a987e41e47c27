"""The site daemon: a libp2p peer that trains locally and averages by gossip.

One :class:`SiteNode` is one hospital's site. It runs on trio, inside whatever
nursery its caller gives it, so a simulator can start many in one process::

    async with trio.open_nursery() as nursery:
        for node in nodes:
            await nursery.start(node.run)      # returns once it listens
        await nodes[0].connect(nodes[1].addresses[0])
        await nodes[0].call_average(nodes[1].did)

The mesh: TCP, Noise only, yamux only, the host key being the site's DID key
(:mod:`node.peer_identity`). Protocols:

- ``/paroma/hello/1.0.0``: the mutual presentation exchange alone
  (:mod:`node.auth`), run when a connection appears, to learn which connected
  peers are admitted members (the averaging candidates).
- ``/paroma/average/1.0.0``: the exchange again (every request is authorized
  afresh), then a two-phase pairwise average, below.
- GossipSub topic ``paroma/announce/1``: small announcements (round, model
  digest), signed by the pubsub layer with the sender's libp2p key, i.e. its
  DID key (libp2p pubsub spec, "Message Signing").
- More protocols (governance) through :meth:`SiteNode.register_protocol`; the
  same authorization runs before their handler.

Averaging is two-phase so that a peer killed midway never leaves the other with
a half-applied model::

    initiator -> responder   offer  {n_samples, round} + weights
    responder -> initiator   reply  {n_samples, round, result} + weights
    initiator -> responder   commit {result}
    responder                applies the average (checkpoint first)
    responder -> initiator   ack
    initiator                applies the same average

Both sides compute ``weighted_pair_average(w_initiator, n_i, w_responder, n_r)``
in the same argument order, so the results are bit-identical and ``result``
(their SHA-256) must agree; this keeps ``sum_i n_i w_i`` of the federation. If
the stream breaks before ``commit``, neither side changes; if it breaks between
``commit`` and ``ack`` only the responder has averaged: both models are still
valid, only the weighted sum moves by that one step (a coordinator-free
two-phase commit cannot close this window; FLP/Two Generals).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import multiaddr
import torch
import trio
import trio.lowlevel
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service
from trio_typing import TaskStatus

from identity.keys import SigningKey
from ml.averaging import (
    check_state,
    clipped_pair_update,
    from_fp16,
    to_fp16,
    trimmed_mean,
    weighted_pair_average,
)
from ml.errors import MLError
from ml.weights import (
    atomic_write_bytes,
    model_digest,
    state_from_bytes,
    state_to_bytes,
)
from node.auth import (
    Action,
    AuthenticatedPeer,
    Authorizer,
    authenticate_initiator,
    authenticate_responder,
)
from node.errors import (
    NodeError,
    PeerRefused,
    PeerUnreachable,
    ProtocolViolation,
)
from node.peer_identity import (
    did_from_peer_id,
    key_pair_from_signing_key,
    peer_id_from_did,
)
from node.store import SiteStore
from node.wire import FramedStream, Header, Limits

logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
HELLO_PROTOCOL = TProtocol("/paroma/hello/1.0.0")
AVERAGE_PROTOCOL = TProtocol("/paroma/average/1.0.0")
ANNOUNCE_TOPIC = "paroma/announce/1"
MAX_ANNOUNCEMENT_BYTES = 4096  # far below GossipSub's silent 1 MiB drop
StateDict = dict[str, torch.Tensor]


class RobustMode(StrEnum):
    """How a site merges a neighbour's model."""

    NONE = "none"  # weighted pairwise average (preserves the weighted mean)
    CLIPPED = "clipped"  # clipped gossip: neighbour's pull clipped to tau
    TRIMMED = "trimmed"  # coordinate-wise trimmed mean over recent neighbours


class Phase(StrEnum):
    """Message types of the averaging protocol, in order."""

    OFFER = "offer"
    REPLY = "reply"
    COMMIT = "commit"
    ACK = "ack"


@dataclass(frozen=True)
class AveragingSettings:
    """How and how often a site averages.

    Attributes:
        period_s: seconds between two exchanges this site starts (jittered
            +-25 %); 0 disables the loop (exchanges only on request).
        robust: merge rule.
        tau: clipping radius for ``clipped`` (L2 norm over all parameters).
        trim: values dropped at each end per coordinate for ``trimmed``.
        fp16: send weights as float16 (half the bytes; both ends then average
            the same rounded values).
        max_payload_bytes: largest weights payload accepted.
        step_timeout_s: deadline of one whole exchange, seconds.
        retries: further attempts with other neighbours after a failure.
    """

    period_s: float = 30.0
    robust: RobustMode = RobustMode.NONE
    tau: float = 1.0
    trim: int = 1
    fp16: bool = False
    max_payload_bytes: int = 256 * 1024 * 1024
    step_timeout_s: float = 30.0
    retries: int = 2


@dataclass(frozen=True)
class NodeSettings:
    """Everything a :class:`SiteNode` needs besides its key and model.

    Attributes:
        store: the site's store folder (SQLite + checkpoints).
        listen: multiaddr to listen on (``/ip4/127.0.0.1/tcp/0``: any free port).
        bootstrap: multiaddrs with ``/p2p/<peer id>`` to dial at start.
        averaging: the averaging settings.
        train_steps: local steps between exchanges (0: no training).
        heartbeat_s: GossipSub heartbeat, seconds (library default 120 s).
        gossip_degree: GossipSub mesh degree D.
        status_file: where :meth:`SiteNode.run` writes its status JSON
            (None: not written).
        maintenance_s: how often connections are checked and the status written.
    """

    store: Path
    listen: str = "/ip4/127.0.0.1/tcp/0"
    bootstrap: tuple[str, ...] = ()
    averaging: AveragingSettings = field(default_factory=AveragingSettings)
    train_steps: int = 0
    heartbeat_s: int = 1
    gossip_degree: int = 6
    status_file: Path | None = None
    maintenance_s: float = 1.0


class TrainingProvider(Protocol):
    """Local training, called in a worker thread (it may block for seconds)."""

    @property
    def n_samples(self) -> float:
        """The site's number of training samples (its averaging weight)."""
        ...

    def train(self, state: StateDict, steps: int) -> StateDict:
        """Train from ``state`` for ``steps`` steps and return the new state."""
        ...


class ModelLedger(Protocol):
    """The part of :class:`ledger.api.Ledger` the daemon writes to."""

    def record_model(
        self,
        round: int,
        model_digest: bytes,
        parents: Sequence[bytes],
        contributors: Sequence[str],
    ) -> object: ...


@runtime_checkable
class SyncingLedger(Protocol):
    """A ledger with a local event index (``ledger.api.Ledger.sync``)."""

    def sync(self) -> int: ...


ProtocolHandler = Callable[[FramedStream, AuthenticatedPeer], Awaitable[None]]
"""An extra protocol's handler: the stream after a successful authorization."""


@dataclass
class _Model:
    """The site's current model; replaced whole, never mutated in place."""

    state: StateDict
    n_samples: float
    round: int
    digest: bytes


@dataclass(frozen=True)
class ExchangeOutcome:
    """What one finished averaging exchange did.

    Attributes:
        peer_did: the neighbour.
        round: this site's round after the exchange.
        digest: the new model's SHA-256.
    """

    peer_did: str
    round: int
    digest: bytes


@dataclass
class _PeerRecord:
    did: str
    admitted: bool
    checked_at: float  # trio time of the last hello exchange
    reason: str = ""


class SiteNode:
    """One site's daemon: mesh host, authorization, averaging, store, ledger.

    Args:
        key: the site's DID key; also its libp2p identity.
        settings: addresses, store and averaging settings.
        authorizer: makes and judges presentations (see :mod:`node.auth`).
        initial_state: the model to start from when the store has no checkpoint.
        n_samples: the site's sample count (ignored if a trainer gives one).
        ledger: where model provenance is recorded (None: not recorded).
        trainer: local training (None: the site only averages).
    """

    def __init__(
        self,
        key: SigningKey,
        settings: NodeSettings,
        authorizer: Authorizer,
        initial_state: Mapping[str, torch.Tensor],
        n_samples: float,
        *,
        ledger: ModelLedger | None = None,
        trainer: TrainingProvider | None = None,
    ) -> None:
        self.key = key
        self.did = key.did
        self.settings = settings
        self.authorizer = authorizer
        self.ledger = ledger
        self.trainer = trainer
        self.store = SiteStore(settings.store)
        # _reference: names, shapes, dtypes every peer state must match.
        self._reference = {n: t.detach().clone() for n, t in initial_state.items()}
        self._model = self._resume(initial_state, n_samples)
        self.host: IHost = self._build_host()
        self.peer_id = self.host.get_id()
        self.limits = Limits(settings.averaging.max_payload_bytes)
        # _exchange_lock: held for a whole exchange or training step; a site
        # is in at most one at a time (responders refuse with "busy").
        self._exchange_lock = trio.Lock()
        self._peers: dict[ID, _PeerRecord] = {}
        self._neighbour_states: dict[str, StateDict] = {}  # trimmed mode only
        self._extra: dict[TProtocol, tuple[ProtocolHandler, tuple[str, ...]]] = {}
        self._io_limiter = trio.CapacityLimiter(1)  # store writes
        # Ledger calls block for a whole transaction (tens of ms embedded, a
        # block period on a consortium chain): their own worker thread, so a
        # slow write never holds up an exchange's checkpoint.
        self._ledger_limiter = trio.CapacityLimiter(1)
        self._train_limiter = trio.CapacityLimiter(1)
        self._rng = random.SystemRandom()
        self._pubsub: Pubsub | None = None
        self.peer_announcements: dict[str, dict[str, Any]] = {}  # did -> last
        self.refusals = 0  # how many exchanges this site refused
        self._announced_round = -1  # the last round announced by gossip
        self.ledger_height: int | None = None  # indexed height at the last sync
        self._last_sync = -math.inf  # trio time of the last ledger sync
        self.started = trio.Event()
        self._record_wakeup = trio.Event()
        self.host.set_stream_handler(HELLO_PROTOCOL, self._guarded(self.rpc_hello))
        self.host.set_stream_handler(AVERAGE_PROTOCOL, self._guarded(self.rpc_average))

    # ----- model state -----------------------------------------------------------

    def _resume(self, initial: Mapping[str, torch.Tensor], n_samples: float) -> _Model:
        if self.trainer is not None:
            n_samples = self.trainer.n_samples
        if not (math.isfinite(n_samples) and n_samples > 0):
            raise NodeError(f"n_samples must be > 0, got {n_samples}")
        saved = self.store.latest_checkpoint(self._reference)
        if saved is not None:
            logger.info("%s resumes from round %d", self.did, saved.round)
            return _Model(saved.state, n_samples, saved.round, saved.digest)
        state = {n: t.detach().clone() for n, t in initial.items()}
        digest = model_digest(state)
        self.store.save_checkpoint(0, state, n_samples, digest, kind="initial")
        return _Model(state, n_samples, 0, digest)

    @property
    def state(self) -> StateDict:
        """A copy of the current model weights."""
        return {n: t.clone() for n, t in self._model.state.items()}

    @property
    def round(self) -> int:
        return self._model.round

    @property
    def digest(self) -> bytes:
        return self._model.digest

    @property
    def n_samples(self) -> float:
        return self._model.n_samples

    async def install(
        self, state: Mapping[str, torch.Tensor], *, kind: str = "install"
    ) -> None:
        """Make ``state`` the site's model, as the next round (checked first).

        For weights made outside training and averaging, e.g. retrained
        without an erased patient's data (:mod:`node.governance.erasure`).
        Waits for the current exchange or training step to finish.

        Raises:
            ml.errors.WeightsInvalid: not this model's names, shapes or dtypes,
                or not finite.
        """
        new = {n: t.detach().clone() for n, t in state.items()}
        check_state(new, self._reference, what="installed weights")
        async with self._exchange_lock:
            await self._apply(
                new, kind=kind, parents=[self._model.digest], contributors=[]
            )

    async def _apply(
        self,
        state: StateDict,
        *,
        kind: str,
        parents: Sequence[bytes],
        contributors: Sequence[str],
        digest: bytes | None = None,
    ) -> None:
        """Checkpoint ``state`` as the next round, then make it current.

        ``digest`` is ``model_digest(state)`` when the caller already has it.
        """
        round_ = self._model.round + 1
        if digest is None:
            digest = await trio.to_thread.run_sync(model_digest, state)
        await trio.to_thread.run_sync(
            lambda: self.store.save_checkpoint(
                round_,
                state,
                self._model.n_samples,
                digest,
                parents=parents,
                contributors=contributors,
                kind=kind,
            ),
            limiter=self._io_limiter,
        )
        self._model = _Model(state, self._model.n_samples, round_, digest)
        self._record_wakeup.set()
        logger.info("%s round %d (%s) %s", self.did, round_, kind, digest.hex()[:16])

    # ----- host -----------------------------------------------------------------

    def _build_host(self) -> IHost:
        key_pair = key_pair_from_signing_key(self.key)
        # Noise only: new_host's default also offers TLS, SECIO and *plaintext*
        # (libp2p connections spec lets the dialer pick), so a peer could skip
        # encryption. The Noise static key is a fresh X25519 key; the handshake
        # payload signs it with the identity key (libp2p noise spec).
        noise = NoiseTransport(
            key_pair, noise_privkey=new_x25519_key_pair().private_key
        )
        return new_host(
            key_pair=key_pair,
            sec_opt={NOISE_PROTOCOL_ID: noise},
            muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        )

    @property
    def addresses(self) -> list[str]:
        """Listening multiaddrs with ``/p2p/<peer id>`` (valid once started)."""
        return [str(a) for a in self.host.get_addrs()]

    def _build_pubsub(self) -> tuple[Pubsub, GossipSub]:
        listen = self.settings.listen
        router = GossipSub(
            protocols=[TProtocol("/meshsub/1.1.0"), TProtocol("/meshsub/1.0.0")],
            degree=self.settings.gossip_degree,
            degree_low=max(1, self.settings.gossip_degree - 2),
            degree_high=self.settings.gossip_degree * 2,
            heartbeat_interval=self.settings.heartbeat_s,
            # All loopback peers share one IP; diversity checks would starve
            # the mesh in one-machine federations.
            eclipse_protection_enabled=not listen.startswith("/ip4/127."),
        )
        return Pubsub(self.host, router, strict_signing=True), router

    async def run(
        self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, dial the bootstrap peers and serve until cancelled.

        Signals ``task_status.started()`` once listening (use
        ``await nursery.start(node.run)``). On cancellation the latest model
        is already checkpointed (every round is), the status file is updated
        and the store closed.
        """
        listen = [multiaddr.Multiaddr(self.settings.listen)]
        pubsub, router = self._build_pubsub()
        self._pubsub = pubsub
        try:
            async with (
                self.host.run(listen),
                background_trio_service(pubsub),
                background_trio_service(router),
                trio.open_nursery() as nursery,
            ):
                await pubsub.wait_until_ready()
                subscription = await pubsub.subscribe(ANNOUNCE_TOPIC)
                nursery.start_soon(self._receive_announcements, subscription)
                nursery.start_soon(self._maintenance_loop)
                nursery.start_soon(self._record_loop)
                if self.settings.averaging.period_s > 0:
                    nursery.start_soon(self._averaging_loop)
                if self.trainer is not None and self.settings.train_steps > 0:
                    nursery.start_soon(self._training_loop)
                for address in self.settings.bootstrap:
                    nursery.start_soon(self._bootstrap, address)
                logger.info("%s listening on %s", self.did, self.addresses)
                self.started.set()
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    # Close connections before the services stop, or their
                    # sockets are left to the garbage collector.
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        await self.host.close()
                    nursery.cancel_scope.cancel()
        finally:
            self._pubsub = None
            with trio.CancelScope(shield=True):
                await self._write_status(running=False)
            self.store.close()

    async def _bootstrap(self, address: str) -> None:
        for attempt in range(5):
            try:
                await self.connect(address)
                return
            except NodeError as exc:
                logger.info("bootstrap peer %s: %s (attempt %d)", address, exc, attempt)
            await trio.sleep(2.0 * (attempt + 1))

    async def connect(self, address: str) -> str:
        """Dial ``address`` (with ``/p2p/<peer id>``) and run the hello exchange.

        Returns:
            The peer's DID once it is admitted.

        Raises:
            PeerUnreachable: no connection.
            PeerRefused: the peer or this site refused the other.
        """
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        except Exception as exc:
            raise PeerUnreachable(f"{address!r} is not a multiaddr with /p2p/") from exc
        try:
            with trio.fail_after(self.settings.averaging.step_timeout_s):
                await self.host.connect(info)
        except (Exception, trio.TooSlowError) as exc:
            raise PeerUnreachable(f"cannot connect to {address}: {exc!r}") from exc
        return await self.call_hello(info.peer_id)

    # ----- protocol plumbing ------------------------------------------------------

    def _guarded(
        self, handler: Callable[[INetStream], Awaitable[None]]
    ) -> Callable[[INetStream], Awaitable[None]]:
        """Log and reset on any error: libp2p swallows handler exceptions."""

        async def guarded(stream: INetStream) -> None:
            try:
                await handler(stream)
            except (NodeError, MLError, trio.TooSlowError) as exc:
                logger.info("%s refused a stream: %s", self.did, exc)
                self.refusals += 1
                await _reset(stream)
            except Exception:
                logger.exception("%s: stream handler failed", self.did)
                await _reset(stream)
            else:
                await _close(stream)

        return guarded

    def _framed(self, stream: INetStream) -> FramedStream:
        return FramedStream(stream, PROTOCOL_VERSION, self.limits)

    def register_protocol(
        self,
        protocol_id: str,
        handler: ProtocolHandler,
        actions: Sequence[str],
    ) -> None:
        """Serve an extra protocol (governance), authorized like averaging.

        Each stream first runs the mutual presentation exchange; ``handler``
        runs only if the peer is authorized for one of ``actions`` (the policy
        hook sees the action). Errors are logged and the stream reset.

        Args:
            protocol_id: e.g. ``/paroma/erasure/1.0.0`` (version in the id).
            handler: ``await handler(framed, peer)``.
            actions: the actions a peer may request on this protocol.
        """
        pid = TProtocol(protocol_id)
        self._extra[pid] = (handler, tuple(actions))

        async def serve(stream: INetStream) -> None:
            framed = self._framed(stream)
            peer = await self._authenticate_responder(stream, framed, actions)
            await handler(framed, peer)

        self.host.set_stream_handler(pid, self._guarded(serve))

    async def open_protocol(
        self, peer_did: str, protocol_id: str, action: str
    ) -> tuple[FramedStream, AuthenticatedPeer, INetStream]:
        """Open an authorized stream of an extra protocol to a connected peer.

        The caller must close (or reset) the returned stream.
        """
        peer_id = self._peer_id_of(peer_did)
        stream = await self._open(peer_id, TProtocol(protocol_id))
        framed = self._framed(stream)
        try:
            with trio.fail_after(self.settings.averaging.step_timeout_s):
                peer = await authenticate_initiator(
                    framed,
                    local_did=self.did,
                    peer_did=peer_did,
                    authorizer=self.authorizer,
                    action=action,
                )
        except BaseException:
            await _reset(stream)
            raise
        return framed, peer, stream

    async def _open(self, peer_id: ID, protocol: TProtocol) -> INetStream:
        try:
            with trio.fail_after(self.settings.averaging.step_timeout_s):
                return await self.host.new_stream(peer_id, [protocol])
        except (Exception, trio.TooSlowError) as exc:
            raise PeerUnreachable(
                f"no {protocol} stream to {peer_id}: {exc!r}"
            ) from exc

    def _peer_id_of(self, peer_did: str) -> ID:
        for peer_id, record in self._peers.items():
            if record.did == peer_did:
                return peer_id
        return peer_id_from_did(peer_did)

    async def _authenticate_responder(
        self, stream: INetStream, framed: FramedStream, actions: Sequence[str]
    ) -> AuthenticatedPeer:
        peer_id = stream.muxed_conn.peer_id
        peer_did = did_from_peer_id(peer_id)
        with trio.fail_after(self.settings.averaging.step_timeout_s):
            try:
                return await authenticate_responder(
                    framed,
                    local_did=self.did,
                    peer_did=peer_did,
                    authorizer=self.authorizer,
                    allowed_actions=actions,
                )
            except PeerRefused as exc:
                await self._note_refusal(peer_id, peer_did, str(exc))
                raise

    async def _note_refusal(self, peer_id: ID, did: str, reason: str) -> None:
        self._peers[peer_id] = _PeerRecord(did, False, trio.current_time(), reason)
        logger.warning("%s refused %s: %s", self.did, did, reason)
        await trio.to_thread.run_sync(
            self.store.note_refusal, did, reason, limiter=self._io_limiter
        )

    # ----- hello ----------------------------------------------------------------

    async def call_hello(self, peer_id: ID) -> str:
        """Run the mutual exchange with a connected peer; remember the verdict."""
        peer_did = did_from_peer_id(peer_id)
        stream = await self._open(peer_id, HELLO_PROTOCOL)
        framed = self._framed(stream)
        try:
            with trio.fail_after(self.settings.averaging.step_timeout_s):
                await authenticate_initiator(
                    framed,
                    local_did=self.did,
                    peer_did=peer_did,
                    authorizer=self.authorizer,
                    action=Action.HELLO,
                )
        except (NodeError, trio.TooSlowError) as exc:
            await _reset(stream)
            await self._note_refusal(peer_id, peer_did, str(exc))
            raise PeerRefused(str(exc)) from exc
        await _close(stream)
        self._peers[peer_id] = _PeerRecord(peer_did, True, trio.current_time())
        await trio.to_thread.run_sync(
            self.store.note_peer, str(peer_id), peer_did, True, limiter=self._io_limiter
        )
        return peer_did

    async def rpc_hello(self, stream: INetStream) -> None:
        framed = self._framed(stream)
        peer = await self._authenticate_responder(stream, framed, [Action.HELLO])
        peer_id = stream.muxed_conn.peer_id
        self._peers[peer_id] = _PeerRecord(peer.did, True, trio.current_time())

    def admitted_peers(self) -> list[str]:
        """DIDs of connected peers whose last hello exchange admitted them."""
        connected = set(self.host.get_connected_peers())
        return sorted(
            r.did for p, r in self._peers.items() if r.admitted and p in connected
        )

    def connected_peers(self) -> list[str]:
        return sorted(str(p) for p in self.host.get_connected_peers())

    # ----- averaging --------------------------------------------------------------

    def _encode(self, state: StateDict) -> bytes:
        return state_to_bytes(state, fp16=self.settings.averaging.fp16)

    def _decode(self, payload: bytes) -> StateDict:
        """Peer bytes to a checked state in the model's dtypes (never pickle)."""
        state = state_from_bytes(payload, self._reference)
        check_state(state, self._reference)
        return state

    def _as_sent(self, state: StateDict) -> StateDict:
        """This site's state as the peer will see it (fp16 rounding if used)."""
        if not self.settings.averaging.fp16:
            return state
        return from_fp16(to_fp16(state), state)

    def _merge(
        self,
        *,
        initiator: StateDict,
        n_initiator: float,
        responder: StateDict,
        n_responder: float,
        own_is_initiator: bool,
        peer_did: str,
    ) -> StateDict:
        mode = self.settings.averaging.robust
        if mode is RobustMode.NONE:
            return weighted_pair_average(initiator, n_initiator, responder, n_responder)
        own, n_own, other, n_other = (
            (initiator, n_initiator, responder, n_responder)
            if own_is_initiator
            else (responder, n_responder, initiator, n_initiator)
        )
        if mode is RobustMode.CLIPPED:
            tau = self.settings.averaging.tau
            return clipped_pair_update(own, n_own, other, n_other, tau)
        self._neighbour_states[peer_did] = other
        states = [own, *self._neighbour_states.values()]
        trim = self.settings.averaging.trim
        if len(states) < 2 * trim + 1:
            tau = self.settings.averaging.tau
            return clipped_pair_update(own, n_own, other, n_other, tau)
        return trimmed_mean(states, trim)

    async def call_average(self, peer_did: str) -> ExchangeOutcome:
        """Average with one connected peer (this site initiates).

        Waits for this site's own exchange or training to finish first.

        Raises:
            PeerBusy: the peer is in another exchange.
            PeerRefused: authorization failed on either side.
            ProtocolViolation, ml.errors.WeightsInvalid: bad data from the peer.
            PeerUnreachable: no stream, or the deadline passed.
            In every case this site's model is unchanged.
        """
        peer_id = self._peer_id_of(peer_did)
        async with self._exchange_lock:
            stream = await self._open(peer_id, AVERAGE_PROTOCOL)
            try:
                with trio.fail_after(self.settings.averaging.step_timeout_s):
                    merged, parents, digest = await self._initiate(stream, peer_did)
            except trio.TooSlowError as exc:
                await _reset(stream)
                raise PeerUnreachable(f"{peer_did}: exchange timed out") from exc
            except PeerRefused as exc:
                # Either side refused: not a neighbour until a new hello admits it.
                await _reset(stream)
                await self._note_refusal(peer_id, peer_did, str(exc))
                raise
            except BaseException:
                await _reset(stream)
                raise
            await _close(stream)
            await self._apply(
                merged,
                kind="average",
                parents=parents,
                contributors=[self.did, peer_did],
                digest=digest,
            )
            return ExchangeOutcome(peer_did, self.round, self.digest)

    async def _initiate(
        self, stream: INetStream, peer_did: str
    ) -> tuple[StateDict, list[bytes], bytes | None]:
        framed = self._framed(stream)
        await authenticate_initiator(
            framed,
            local_did=self.did,
            peer_did=peer_did,
            authorizer=self.authorizer,
            action=Action.AVERAGE,
        )
        model = self._model
        mine = self._as_sent(model.state)
        payload = await trio.to_thread.run_sync(self._encode, model.state)
        offer = {
            "type": Phase.OFFER,
            "n_samples": model.n_samples,
            "round": model.round,
        }
        await framed.send(offer, payload)
        header, reply = await framed.receive(Phase.REPLY)
        n_peer = _sample_count(header)
        theirs = await trio.to_thread.run_sync(self._decode, reply)
        merged = await trio.to_thread.run_sync(
            lambda: self._merge(
                initiator=mine,
                n_initiator=model.n_samples,
                responder=theirs,
                n_responder=n_peer,
                own_is_initiator=True,
                peer_did=peer_did,
            )
        )
        result: bytes | None = None
        if self.settings.averaging.robust is RobustMode.NONE:
            result = await trio.to_thread.run_sync(model_digest, merged)
            if header.get("result") != result.hex():
                raise ProtocolViolation(f"{peer_did}: averages differ; not committing")
        await self._commit(framed)
        # Provenance names the peer's weights by the SHA-256 of the bytes
        # received: for fp32 weights this is their canonical model digest.
        return merged, [model.digest, _sha256(reply)], result

    async def _commit(self, framed: FramedStream) -> None:
        """Phase two: tell the responder to apply, wait for its ack."""
        await framed.send({"type": Phase.COMMIT})
        await framed.receive(Phase.ACK)

    async def rpc_average(self, stream: INetStream) -> None:
        """Serve one averaging request (see the module docstring's phases)."""
        framed = self._framed(stream)
        # Busy is checked before the (costly) presentation exchange: a site in
        # another exchange answers at once and the caller tries elsewhere.
        try:
            self._exchange_lock.acquire_nowait()
        except trio.WouldBlock:
            await framed.send({"type": "refused", "reason": "busy", "busy": True})
            return
        try:
            peer = await self._authenticate_responder(stream, framed, [Action.AVERAGE])
            with trio.fail_after(self.settings.averaging.step_timeout_s):
                await self._respond(framed, peer)
        finally:
            self._exchange_lock.release()

    async def _respond(self, framed: FramedStream, peer: AuthenticatedPeer) -> None:
        header, payload = await framed.receive(Phase.OFFER)
        n_peer = _sample_count(header)
        theirs = await trio.to_thread.run_sync(self._decode, payload)
        model = self._model
        mine = self._as_sent(model.state)
        merged = await trio.to_thread.run_sync(
            lambda: self._merge(
                initiator=theirs,
                n_initiator=n_peer,
                responder=mine,
                n_responder=model.n_samples,
                own_is_initiator=False,
                peer_did=peer.did,
            )
        )
        result = await trio.to_thread.run_sync(model_digest, merged)
        reply = {
            "type": Phase.REPLY,
            "n_samples": model.n_samples,
            "round": model.round,
            "result": result.hex(),
        }
        await framed.send(reply, await trio.to_thread.run_sync(self._encode, mine))
        await framed.receive(Phase.COMMIT)
        await self._apply(
            merged,
            kind="average",
            parents=[model.digest, _sha256(payload)],
            contributors=[self.did, peer.did],
            digest=result,
        )
        await framed.send({"type": Phase.ACK})

    # ----- background loops ----------------------------------------------------------

    async def average_once(self) -> ExchangeOutcome | None:
        """One exchange with a random admitted neighbour, with retries.

        Returns None if no neighbour is admitted or every attempt failed
        (failures of single peers are expected and logged at DEBUG).
        """
        for _ in range(self.settings.averaging.retries + 1):
            neighbours = self.admitted_peers()
            if not neighbours:
                return None
            peer_did = self._rng.choice(neighbours)
            try:
                return await self.call_average(peer_did)
            except (NodeError, MLError) as exc:
                logger.debug("%s: exchange with %s failed: %r", self.did, peer_did, exc)
        return None

    async def _averaging_loop(self) -> None:
        period = self.settings.averaging.period_s
        while True:
            await trio.sleep(period * self._rng.uniform(0.75, 1.25))
            await self.average_once()

    async def train_once(
        self, steps: int, limiter: trio.CapacityLimiter | None = None
    ) -> None:
        """Train ``steps`` local steps in a worker thread; the result is the next
        round (checked, checkpointed, later recorded on the ledger).

        Holds the exchange lock meanwhile, so averaging requests get "busy".

        Args:
            steps: optimizer steps (nothing happens if <= 0 or no trainer).
            limiter: bounds concurrent training across sites (default: this
                site's own limiter of one).
        """
        trainer = self.trainer
        if trainer is None or steps <= 0:
            return
        async with self._exchange_lock:
            start = self._model.state
            trained = await trio.to_thread.run_sync(
                _train_one_thread,
                trainer,
                start,
                steps,
                limiter=limiter or self._train_limiter,
            )
            check_state(trained, self._reference, what="trained weights")
            await self._apply(
                trained, kind="train", parents=[self._model.digest], contributors=[]
            )

    async def _training_loop(self) -> None:
        while True:
            await self.train_once(self.settings.train_steps)
            # Leave room for neighbours' exchanges between two local epochs.
            await trio.sleep(max(self.settings.averaging.period_s / 2, 0.1))

    async def _maintenance_loop(self) -> None:
        """Check new connections (hello), forget closed ones, write the status."""
        while True:
            for peer_id in list(self.host.get_connected_peers()):
                record = self._peers.get(peer_id)
                stale = record is None or (
                    not record.admitted and trio.current_time() - record.checked_at > 30
                )
                if stale:
                    try:
                        await self.call_hello(peer_id)
                    except NodeError as exc:
                        logger.debug("hello with %s failed: %r", peer_id, exc)
            if self._announced_round != self.round:
                self._announced_round = self.round
                await self.announce(
                    {"kind": "model", "round": self.round, "digest": self.digest.hex()}
                )
            await self._sync_ledger()
            await self._write_status(running=True)
            await trio.sleep(self.settings.maintenance_s)

    async def _sync_ledger(self) -> None:
        """Index new ledger events every 10 s (for the status's sync height)."""
        ledger = self.ledger
        if not isinstance(ledger, SyncingLedger):
            return
        if trio.current_time() - self._last_sync < 10.0:
            return
        self._last_sync = trio.current_time()
        try:
            self.ledger_height = await trio.to_thread.run_sync(
                ledger.sync, limiter=self._ledger_limiter
            )
        except Exception as exc:  # an unreachable ledger must not stop the site
            logger.warning("ledger sync failed: %s", exc)

    async def _record_loop(self) -> None:
        """Record each new round's model digest on the ledger (provenance).

        Rounds are marked recorded only after the transaction is mined, so a
        crash or an unreachable ledger delays recording but loses nothing.
        """
        ledger = self.ledger
        while True:
            await self._record_wakeup.wait()
            self._record_wakeup = trio.Event()
            if ledger is None:
                continue
            rows = await trio.to_thread.run_sync(
                self.store.unrecorded_rounds, limiter=self._io_limiter
            )
            for row in rows:
                if row["kind"] == "initial":
                    await trio.to_thread.run_sync(
                        self.store.mark_recorded, row["round"], limiter=self._io_limiter
                    )
                    continue
                try:
                    await trio.to_thread.run_sync(
                        lambda r=row: ledger.record_model(
                            int(r["round"]),
                            bytes.fromhex(r["digest"]),
                            [bytes.fromhex(p) for p in json.loads(r["parents"])],
                            json.loads(r["contributors"]),
                        ),
                        limiter=self._ledger_limiter,
                    )
                except Exception as exc:  # ledger errors: retried at the next round
                    logger.warning("recording round %s failed: %s", row["round"], exc)
                    break
                await trio.to_thread.run_sync(
                    self.store.mark_recorded, row["round"], limiter=self._io_limiter
                )

    async def announce(self, message: Mapping[str, Any]) -> None:
        """Publish a small announcement (signed by the pubsub layer)."""
        data = json.dumps({**message, "did": self.did}, sort_keys=True).encode()
        if len(data) > MAX_ANNOUNCEMENT_BYTES:
            raise ProtocolViolation(
                f"announcement of {len(data)} bytes is over {MAX_ANNOUNCEMENT_BYTES}"
            )
        if self._pubsub is not None:
            await self._pubsub.publish(ANNOUNCE_TOPIC, data)

    async def _receive_announcements(self, subscription: Any) -> None:
        while True:
            message = await subscription.get()
            try:
                sender = did_from_peer_id(ID(message.from_id))
                body = json.loads(message.data)
            except (NodeError, ValueError) as exc:
                logger.debug("dropping announcement: %r", exc)
                continue
            if not isinstance(body, dict) or body.get("did") != sender:
                logger.debug("dropping announcement whose DID is not its signer's")
                continue
            if sender != self.did:
                self.peer_announcements[sender] = body

    def status(self) -> dict[str, Any]:
        """JSON-friendly status: peers, round, digest, settings."""
        return {
            "did": self.did,
            "peer_id": str(self.peer_id),
            "addresses": self.addresses,
            "connected_peers": self.connected_peers(),
            "admitted_peers": self.admitted_peers(),
            "round": self.round,
            "model_digest": self.digest.hex(),
            "n_samples": self.n_samples,
            "refusals": self.refusals,
            "ledger_height": self.ledger_height,
            "pid": os.getpid(),
            "robust": self.settings.averaging.robust.value,
            "updated": time.time(),
        }

    async def _write_status(self, *, running: bool) -> None:
        path = self.settings.status_file
        if path is None:
            return
        status = {**self.status(), "running": running}
        if not running:
            status["connected_peers"] = []
            status["admitted_peers"] = []
        data = json.dumps(status, indent=2, sort_keys=True).encode()

        await trio.to_thread.run_sync(atomic_write_bytes, path, data)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _sample_count(header: Header) -> float:
    value = header.get("n_samples")
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ProtocolViolation("header field 'n_samples' must be a number > 0")
    return float(value)


def _train_one_thread(
    trainer: TrainingProvider, state: StateDict, steps: int
) -> StateDict:
    # DESIGN.md: several sites on 2 cores need one torch thread each.
    torch.set_num_threads(1)
    return trainer.train(state, steps)


async def _reset(stream: INetStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.reset()
        except Exception as exc:
            logger.debug("stream reset failed: %r", exc)


async def _close(stream: INetStream) -> None:
    try:
        await stream.close()
    except Exception as exc:
        logger.debug("stream close failed: %r", exc)
