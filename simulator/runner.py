"""One simulated federation, start to finish, in one trio process.

Steps of :meth:`Simulation.run`:

1. phantoms: each site's cohort in its scanner profile (:mod:`simulator.cohort`);
2. governance: the founders deploy the ledger, the other sites are admitted by
   vote, credentials are issued and the status list anchored, every site
   attests its software and registers its patients' consent
   (:mod:`simulator.federation`);
3. rounds: real libp2p sites on 127.0.0.1 (one set per *arm*: the
   decentralized run, plus the honest and opposite-robust runs when the
   scenario compares them) train ``local_steps`` each, then average pairwise
   along random matchings of the topology; the local-only and pooled
   baselines train on the same budget in the same rounds; scheduled events
   (consent withdrawn, patient erased) and faults happen at the start of
   their round;
4. evaluation: every site segments and measures its held-out scans.

Training and inference run in worker threads, at most ``cores`` at once, each
with one torch thread (DESIGN.md: two threads per site made training 5x
slower on two cores).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trio
from trio_typing import TaskStatus

from ml.errors import MLError
from ml.model import ModelConfig, build_model, count_parameters
from node.daemon import AveragingSettings, NodeSettings, RobustMode
from node.errors import NodeError, PeerRefused
from node.governance.training import epsilon_spent
from simulator.cohort import SiteCohort, generate_cohorts
from simulator.errors import RunFailed
from simulator.evaluate import ScanResult, evaluate_scan, load, thickness_summary
from simulator.federation import Federation
from simulator.mesh import SimSiteNode, Traffic
from simulator.scenario import Attack, Baseline, FaultKind, Robust, Scenario
from simulator.topology import (
    Edge,
    build_topology,
    consensus_distance,
    expected_gossip_matrix,
    predicted_distances,
    random_matching,
    round_gap,
    simulated_distances,
    spectral_gap,
)
from simulator.training import (
    ByzantineTrainer,
    Monitor,
    PooledTrainer,
    SiteTrainer,
    StateDict,
    model_config,
    monitor_case,
)

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int, str], None]
"""``progress(stage, done, total, note)``: the command draws it (tqdm)."""

DECENTRALIZED = "decentralized"


def _no_progress(stage: str, done: int, total: int, note: str) -> None:
    return None


@dataclass
class Arm:
    """One set of libp2p sites training by gossip under one setting.

    Attributes:
        name: ``decentralized``, ``honest``, ``robust_off`` or ``robust_on``.
        robust: the merge rule its sites use.
        byzantine: whether the scenario's Byzantine faults apply to it.
        nodes: site -> running node (None while down or not yet joined).
        scopes: site -> the cancel scope its node runs in.
        trainers: site -> its local trainer.
        last_state: site -> its latest known model (kept while it is down).
        traffic: site -> bytes on its streams, across restarts.
        exchanges: outcome -> count (``ok``, ``refused``, ``failed``).
        consensus: consensus distance after each round (index 0: start).
    """

    name: str
    robust: Robust
    byzantine: bool
    nodes: dict[str, SimSiteNode | None] = field(default_factory=dict)
    scopes: dict[str, trio.CancelScope] = field(default_factory=dict)
    trainers: dict[str, SiteTrainer] = field(default_factory=dict)
    last_state: dict[str, StateDict] = field(default_factory=dict)
    traffic: dict[str, Traffic] = field(default_factory=dict)
    exchanges: dict[str, int] = field(
        default_factory=lambda: {"ok": 0, "refused": 0, "failed": 0}
    )
    consensus: list[float] = field(default_factory=list)


class Simulation:
    """A scenario's run, writing into ``out_dir`` (see the module docstring).

    Args:
        scenario: the checked scenario.
        out_dir: the run's folder (``ledger/``, ``sites/``, reports).
        progress: progress callback for the command's bars.
        cores: how many worker threads may compute at once.
    """

    def __init__(
        self,
        scenario: Scenario,
        out_dir: Path,
        *,
        progress: Progress | None = None,
        cores: int = 2,
    ) -> None:
        self.scenario = scenario
        self.out = out_dir
        self.progress = progress or _no_progress
        self.cores = max(1, cores)
        self.rng = np.random.default_rng(scenario.seed)
        self.names = scenario.site_names
        self.index = {n: i for i, n in enumerate(self.names)}
        self.config: ModelConfig = model_config(tiny=scenario.model.value == "tiny")
        self.edges = build_topology(
            scenario.topology, len(self.names), scenario.degree, self.rng
        )
        self.byzantine = {f.site: f for f in scenario.faults_of(FaultKind.BYZANTINE)}
        self.faults: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # governance events, in order
        self.joined: set[str] = set()  # sites admitted and running
        self.partition: list[set[str]] = []  # current sides of a cut
        self.history: dict[str, dict[str, list[float | None]]] = {}
        self.rounds_monitored: list[int] = []
        self.arms: list[Arm] = []
        self.local: dict[str, SiteTrainer] = {}
        self.local_state: dict[str, StateDict] = {}
        self.pooled: PooledTrainer | None = None
        self.pooled_state: StateDict = {}
        # (site, pseudonym, case id, reads of its voxels at erasure); never logged
        self.erased: list[tuple[str, str, str, int]] = []
        self.erasure_reports: list[dict[str, Any]] = []  # no personal data
        self.timings: dict[str, float] = {}
        self.rounds_done = 0  # rounds whose training has finished
        self.cohorts: list[SiteCohort] = []
        self.initial: dict[str, StateDict] = {}
        self.ledger_events: dict[str, int] = {}

    # ----- entry point ----------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run every step; returns the metrics (also written to ``metrics.json``)."""
        torch.set_num_threads(1)
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.cohorts = self._phantoms()
        self.federation = Federation(
            self.out / "ledger",
            self.names,
            [s.name for s in self.scenario.sites if s.founder],
            self.scenario.threshold,
            self.config,
            sites_dir=self.out / "sites",
            lr=self.scenario.lr,
            batch_size=self.scenario.batch_size,
            privacy=self.scenario.privacy,
        )
        try:
            self._governance()
            self._setup_training()
            # py-libp2p 0.8.1 leaves the sockets of dials still in flight when
            # a host closes (tests/node/conftest.py); they are collected here
            # rather than surfacing as warnings at a random later moment.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                trio.run(self._rounds)
                for arm in self.arms:  # the stopped daemons and their hosts
                    arm.nodes = dict.fromkeys(arm.nodes)
                    arm.scopes.clear()
                gc.collect()
            results = self._evaluate()
            self.ledger_events = self.federation.event_counts()
            # Before closing: the figures read the sites' registries.
            metrics = json_safe(self._metrics(results, time.perf_counter() - started))
        finally:
            self.federation.close()
        (self.out / "metrics.json").write_text(
            json.dumps(metrics, indent=2, sort_keys=True)
        )
        return metrics  # type: ignore[no-any-return]

    def _timed(self, stage: str, t0: float) -> None:
        self.timings[stage] = round(time.perf_counter() - t0, 2)

    # ----- step 1 and 2: data and governance ------------------------------------------

    def _phantoms(self) -> list[SiteCohort]:
        t0 = time.perf_counter()
        total = sum(s.n_train + s.n_test for s in self.scenario.sites)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            self.progress("phantoms", done[0], total, "")

        cohorts = generate_cohorts(self.scenario, workers=self.cores, progress=tick)
        self._timed("phantoms", t0)
        return cohorts

    def _event(self, kind: str, **info: Any) -> None:
        self.events.append({"kind": kind, **info})

    def _governance(self) -> None:
        t0 = time.perf_counter()
        fed = self.federation
        late = self.scenario.late_joiners
        steps = len(self.names) * 3 + 2
        self.progress("governance", 0, steps, "deploying the federation contract")
        fed.deploy()
        self._event("deployed", founders=list(fed.founders), threshold=fed.threshold)
        done = 1
        for name in self.names:
            if name not in fed.founders and name not in late:
                votes = fed.admit(name)
                self._event("admitted", site=name, votes=votes, round=0)
            done += 1
            self.progress("governance", done, steps, f"admitting {name}")
        for name in self.names:
            if name not in late:
                fed.issue(name)
        fed.publish_status()
        done += 1
        for name in self.names:
            if name in late:
                continue
            self._join_governance(name)
            done += 2
            self.progress("governance", done, steps, f"consent at {name}")
        self._timed("governance", t0)

    def _join_governance(self, name: str) -> None:
        """A newly admitted site attests and registers its patients' consent."""
        fed = self.federation
        fed.join(name)  # its site folder, governance and attestation
        cohort = self.cohorts[self.index[name]]
        pseudonyms = cohort.pseudonyms
        count = max(2, round(self.scenario.consent_fraction * len(pseudonyms)))
        chosen = sorted(self.rng.choice(len(pseudonyms), count, replace=False))
        consenting = [cohort.train[int(i)] for i in chosen]
        fed.register_consents(name, consenting)
        # The registry now holds the only copy of the consented cases; the
        # others were never given to the site's governance and are never read.
        given = {c.case_id for c in consenting}
        cohort.train = [c for c in cohort.train if c.case_id not in given]
        self.joined.add(name)

    # ----- training set-up ------------------------------------------------------------

    def _trainer(self, name: str, arm: Arm | None, seed: int) -> SiteTrainer:
        """The site's governance trainer (consent-checked reads of its registry).

        ``arm`` None: the local-only baseline's. Each regime spends DP epsilon
        from its own account of the site's registry: the baselines and the
        comparison arms are counterfactual worlds of the site, not draws on
        the decentralized trainer's budget.
        """
        site = self.federation.sites[name]
        trainer = site.gov().trainer(
            account=arm.name if arm is not None else str(Baseline.LOCAL_ONLY),
            seed=seed,
            observer=site.count_read,
            # The model a round's training produces is that round's.
            current_round=lambda: self.rounds_done,
        )
        if arm is not None and arm.byzantine and name in self.byzantine:
            fault = self.byzantine[name]
            return ByzantineTrainer(
                trainer, attack=fault.attack, scale=fault.scale, seed=seed
            )
        return trainer

    def _setup_training(self) -> None:
        sc = self.scenario
        self.initial = self._initial_states()
        self.arms = [Arm(DECENTRALIZED, sc.robust, byzantine=True)]
        if sc.compare_robust:
            self.arms.append(Arm("honest", sc.robust, byzantine=False))
            if sc.robust is Robust.NONE:
                self.arms.append(Arm("robust_on", Robust.CLIPPED, byzantine=True))
            else:
                self.arms.append(Arm("robust_off", Robust.NONE, byzantine=True))
        for arm in self.arms:
            arm.traffic = {n: Traffic() for n in self.names}
            arm.nodes = dict.fromkeys(self.names)
        if Baseline.POOLED in sc.baselines:
            self.pooled_state = dict(self.initial[self.names[0]])
        monitored = [n for n in self.names if self.cohorts[self.index[n]].test]
        self.monitor = Monitor(
            {n: monitor_case(self.cohorts[self.index[n]].test[0]) for n in monitored},
            self.config,
        )
        regimes = [a.name for a in self.arms] + [str(b) for b in sc.baselines]
        self.history = {r: {n: [] for n in monitored} for r in regimes}

    def _initial_states(self) -> dict[str, StateDict]:
        """Every site's starting model: one shared init, or one per site (scale
        runs, where the consensus distance must start above zero)."""

        def fresh(seed: int) -> StateDict:
            torch.manual_seed(seed)
            model = build_model(self.config)
            return {k: v.detach().clone() for k, v in model.state_dict().items()}

        seed = self.scenario.seed
        if self.scenario.same_init:
            first = fresh(seed)
            return {n: first for n in self.names}
        return {n: fresh(seed + 1000 * i) for i, n in enumerate(self.names)}

    # ----- step 3: rounds -------------------------------------------------------------

    async def _rounds(self) -> None:
        sc = self.scenario
        self.limiter = trio.CapacityLimiter(self.cores)
        # Exchanges of one matching are independent, but 16 at once (32 sites)
        # starved the shared event loop past libp2p's 10 s stream negotiation;
        # a few at a time finish well inside it.
        self.exchange_limiter = trio.CapacityLimiter(2 * self.cores)
        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for name in sorted(self.joined, key=self.index.__getitem__):
                await self._start_site(name)
            for arm in self.arms:
                await self._connect_all(arm)
            self._start_baselines(sorted(self.joined))
            await self._measure(0)
            self._timed("mesh_start", t0)
            t1 = time.perf_counter()
            for round_ in range(1, sc.rounds + 1):
                await self._events_at(round_)
                self.progress("rounds", round_ - 1, sc.rounds, "training")
                await self._train(round_)
                self.progress("rounds", round_ - 1, sc.rounds, "averaging")
                used: dict[str, set[Edge]] = {arm.name: set() for arm in self.arms}
                for _ in range(sc.gossip_steps):
                    async with trio.open_nursery() as inner:
                        for arm in self.arms:
                            inner.start_soon(self._gossip, arm, used[arm.name])
                await self._measure(round_)
                self.progress("rounds", round_, sc.rounds, self._round_note())
            self._timed("rounds", t1)
            # Let each site's daemon record its last rounds on the ledger.
            await self._drain_records()
            nursery.cancel_scope.cancel()

    def _round_note(self) -> str:
        arm = self.arms[0]
        dist = arm.consensus[-1] if arm.consensus else math.nan
        dice = self._latest_mean(arm.name)
        return f"dice {dice:.3f} consensus {dist:.3g}"

    def _latest_mean(self, regime: str) -> float:
        values = [
            v[-1]
            for site, v in self.history.get(regime, {}).items()
            if v and v[-1] is not None and site not in self.byzantine
        ]
        return float(np.mean(values)) if values else math.nan

    async def _drain_records(self) -> None:
        """Wait (up to 30 s) until every running site recorded all its rounds."""
        with trio.move_on_after(30):
            for arm in self.arms:
                for node in arm.nodes.values():
                    # The daemon's record loop signals no event to wait on.
                    while node is not None and await trio.to_thread.run_sync(  # noqa: ASYNC110
                        lambda n=node: bool(n.store.unrecorded_rounds())
                    ):
                        await trio.sleep(0.2)

    async def _host(
        self,
        node: SimSiteNode,
        *,
        task_status: TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                await inner.start(node.run)
                task_status.started(scope)

    def _node(self, arm: Arm, name: str) -> SimSiteNode:
        sc = self.scenario
        store = self.out / "sites" / arm.name / name
        # A new or restarted site builds its trainer anew, as a fresh process
        # would (the optimizer's moments are not in the node's checkpoints).
        trainer = self._trainer(name, arm, sc.seed + 17 * self.index[name])
        if isinstance(trainer, ByzantineTrainer):
            trainer.active = self.rounds_done >= self.byzantine[name].round - 1
        arm.trainers[name] = trainer
        settings = NodeSettings(
            store=store,
            averaging=AveragingSettings(
                period_s=0,
                robust=RobustMode(str(arm.robust)),
                tau=sc.tau,
                trim=sc.trim,
                fp16=sc.fp16,
                step_timeout_s=120.0,
                retries=0,
            ),
            train_steps=0,
            gossip_degree=max(1, min(6, len(self.names) - 1)),
            status_file=store / "status.json",
            # Many sites share one event loop: slower background heartbeats
            # (announcements only; the simulator schedules every exchange).
            heartbeat_s=1 if len(self.names) <= 16 else 5,
            maintenance_s=1.0 if len(self.names) <= 16 else 5.0,
        )
        fed = self.federation
        return SimSiteNode(
            fed.sites[name].key,
            settings,
            fed.authorizer(name),
            self.initial[name],
            trainer.n_samples,
            ledger=fed.handle(name),
            trainer=trainer,
            traffic=arm.traffic[name],
        )

    async def _start_site(self, name: str) -> None:
        for arm in self.arms:
            node = self._node(arm, name)
            arm.scopes[name] = await self.nursery.start(self._host, node)
            arm.nodes[name] = node
            arm.last_state[name] = node.state

    async def _stop_site(self, name: str) -> None:
        for arm in self.arms:
            node = arm.nodes.get(name)
            if node is not None:
                arm.last_state[name] = node.state
                arm.scopes[name].cancel()
                arm.nodes[name] = None
                del arm.trainers[name]
        await trio.sleep(0.1)

    def _usable(self, a: str, b: str) -> bool:
        return all((a in side) == (b in side) for side in self.partition)

    async def _connect_all(self, arm: Arm, only: str | None = None) -> None:
        for i, j in self.edges:
            a, b = self.names[i], self.names[j]
            if only is not None and only not in (a, b):
                continue
            na, nb = arm.nodes.get(a), arm.nodes.get(b)
            if na is None or nb is None or not self._usable(a, b):
                continue
            try:
                await na.connect(nb.addresses[0])
            except NodeError as exc:
                logger.info("%s: %s could not connect to %s: %s", arm.name, a, b, exc)

    def _start_baselines(self, names: list[str]) -> None:
        sc = self.scenario
        if Baseline.LOCAL_ONLY in sc.baselines:
            for name in names:
                self.local[name] = self._trainer(
                    name, None, sc.seed + 31 * self.index[name]
                )
                self.local_state[name] = dict(self.initial[name])
        if Baseline.POOLED in sc.baselines:
            self._rebuild_pooled()

    def _rebuild_pooled(self) -> None:
        sc = self.scenario
        fed = self.federation
        sources = [
            (fed.sites[n].gov(), fed.sites[n].count_read)
            for n in self.names
            if n in self.joined
        ]
        old = self.pooled
        self.pooled = PooledTrainer(
            sources,
            self.config,
            batch_size=sc.batch_size * len(sources),
            lr=sc.lr,
            seed=sc.seed + 7,
        )
        if old is not None:
            # Keep the optimizer's moments across a new site's arrival.
            self.pooled.trainer.optimizer.load_state_dict(
                old.trainer.optimizer.state_dict()
            )

    async def _train(self, round_: int) -> None:
        steps = self.scenario.local_steps
        if steps <= 0:
            return
        async with trio.open_nursery() as nursery:
            # Longest job first (the pooled model trains on every site's batch),
            # so no core idles at the end of the round.
            if self.pooled is not None:
                nursery.start_soon(self._train_pooled, steps)
                await trio.lowlevel.checkpoint()
            for arm in self.arms:
                for node in arm.nodes.values():
                    if node is not None:
                        nursery.start_soon(node.train_once, steps, self.limiter)
            for name, trainer in self.local.items():
                nursery.start_soon(self._train_local_baseline, name, trainer, steps)
        self.rounds_done = round_

    async def _train_local_baseline(
        self, name: str, trainer: SiteTrainer, steps: int
    ) -> None:
        self.local_state[name] = await trio.to_thread.run_sync(
            trainer.train, self.local_state[name], steps, limiter=self.limiter
        )

    async def _train_pooled(self, steps: int) -> None:
        pooled = self.pooled
        assert pooled is not None
        self.pooled_state = await trio.to_thread.run_sync(
            pooled.train, self.pooled_state, steps, limiter=self.limiter
        )

    async def _gossip(self, arm: Arm, used: set[Edge]) -> None:
        def usable(i: int, j: int) -> bool:
            a, b = self.names[i], self.names[j]
            return (
                arm.nodes.get(a) is not None
                and arm.nodes.get(b) is not None
                and self._usable(a, b)
            )

        pairs = random_matching(self.edges, self.rng, usable, used)
        async with trio.open_nursery() as nursery:
            for i, j in pairs:
                nursery.start_soon(self._exchange, arm, self.names[i], self.names[j])

    async def _exchange(self, arm: Arm, a: str, b: str) -> None:
        node, peer = arm.nodes[a], arm.nodes[b]
        if node is None or peer is None:
            return
        try:
            async with self.exchange_limiter:
                await node.call_average(peer.did)
        except PeerRefused as exc:
            arm.exchanges["refused"] += 1
            logger.info("%s: %s -> %s refused: %s", arm.name, a, b, exc)
        except (NodeError, MLError) as exc:
            arm.exchanges["failed"] += 1
            logger.info("%s: %s -> %s failed: %r", arm.name, a, b, exc)
        else:
            arm.exchanges["ok"] += 1

    async def _measure(self, round_: int) -> None:
        sc = self.scenario
        for arm in self.arms:
            for name, node in arm.nodes.items():
                if node is not None:
                    arm.last_state[name] = node.state
            honest = [
                n
                for n, node in arm.nodes.items()
                if node is not None and not (arm.byzantine and n in self.byzantine)
            ]
            states = [arm.last_state[n] for n in honest]
            weights = [arm.trainers[n].n_samples for n in honest]
            arm.consensus.append(
                await trio.to_thread.run_sync(consensus_distance, states, weights)
            )
        every = sc.monitor_every
        final = round_ == sc.rounds
        if every <= 0 or (round_ % every and not final):
            return
        self.rounds_monitored.append(round_)
        jobs: list[tuple[str, str, StateDict | None]] = []
        for arm in self.arms:
            for site in self.history[arm.name]:
                jobs.append(
                    (
                        arm.name,
                        site,
                        arm.last_state.get(site) if site in self.joined else None,
                    )
                )
        for site in self.history.get(str(Baseline.LOCAL_ONLY), {}):
            jobs.append((str(Baseline.LOCAL_ONLY), site, self.local_state.get(site)))
        for site in self.history.get(str(Baseline.POOLED), {}):
            jobs.append((str(Baseline.POOLED), site, self.pooled_state or None))

        async def one(regime: str, site: str, state: StateDict | None) -> None:
            value = None
            if state is not None:
                value = await trio.to_thread.run_sync(
                    self.monitor.dice, state, site, limiter=self.limiter
                )
            self.history[regime][site].append(value)

        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(one, *job)

    # ----- events and faults ----------------------------------------------------------

    def _fault(self, round_: int, kind: str, what: str, **info: Any) -> dict[str, Any]:
        main = self.arms[0]
        record = {
            "round": round_,
            "kind": kind,
            "what": what,
            **info,
            # What the decentralized arm looked like when the fault began, so
            # the outcome can be told at the end.
            "refused_before": main.exchanges["refused"],
            "failed_before": main.exchanges["failed"],
            "consensus_before": main.consensus[-1] if main.consensus else None,
        }
        self.faults.append(record)
        logger.info("round %s: %s: %s", round_, kind, what)
        return record

    def _outcomes(self, dice_mean: dict[str, float], sites: dict[str, Any]) -> None:
        """Add to each fault record, in words, what followed it."""
        main = self.arms[0]
        for i, record in enumerate(self.faults):
            later = self.faults[i + 1 :]
            kind = record["kind"]
            refused = main.exchanges["refused"] - record["refused_before"]
            failed = main.exchanges["failed"] - record["failed_before"]
            end = main.consensus[-1] if main.consensus else math.nan
            if kind == "revoke":
                text = f"{refused} exchanges refused by the authorization afterwards"
            elif kind == "crash":
                text = (
                    f"{failed} exchanges failed afterwards; the other sites "
                    "kept training and averaging"
                )
            elif kind == "partition":
                heal = next((f for f in later if f["kind"] == "heal"), None)
                at_heal = heal["consensus_before"] if heal else end
                text = (
                    f"consensus distance {_g(record['consensus_before'])} before, "
                    f"{_g(at_heal)} when it healed"
                )
            elif kind == "heal":
                text = f"consensus distance {_g(end)} at the end of the run"
            elif kind == "byzantine":
                parts = [f"{r} {_g(v)}" for r, v in dice_mean.items()]
                text = "final mean Dice of the honest sites: " + ", ".join(parts)
            elif kind in ("late_join", "restart"):
                dice = sites.get(record.get("site", ""), {}).get("dice", {})
                parts = [f"{r} {_g(v)}" for r, v in dice.items()]
                text = "its final Dice: " + ", ".join(parts)
            else:
                text = ""
            record["outcome"] = text

    async def _events_at(self, round_: int) -> None:
        sc = self.scenario
        for fault in sc.faults:
            if fault.kind is FaultKind.CRASH and fault.round == round_:
                await self._stop_site(fault.site)
                self._fault(
                    round_, "crash", f"site {fault.site} crashed", site=fault.site
                )
            elif fault.kind is FaultKind.CRASH and fault.until == round_:
                resumed = await self._restart(fault.site)
                self._fault(
                    round_,
                    "restart",
                    f"site {fault.site} restarted and resumed from its round "
                    f"{resumed} checkpoint",
                    site=fault.site,
                )
            elif fault.kind is FaultKind.PARTITION and fault.round == round_:
                self.partition = [set(g) for g in fault.groups]
                await self._cut()
                self._fault(
                    round_,
                    "partition",
                    "network partitioned into "
                    + " | ".join(",".join(g) for g in fault.groups),
                    groups=[list(g) for g in fault.groups],
                )
            elif fault.kind is FaultKind.PARTITION and fault.until == round_:
                self.partition = []
                for arm in self.arms:
                    await self._connect_all(arm)
                self._fault(round_, "heal", "partition healed; sites reconnected")
            elif fault.kind is FaultKind.BYZANTINE and fault.round == round_:
                for arm in self.arms:
                    trainer = arm.trainers.get(fault.site)
                    if isinstance(trainer, ByzantineTrainer):
                        trainer.active = True
                what = (
                    f"weights x {fault.scale:g}"
                    if fault.attack is Attack.SCALED
                    else f"Gaussian noise, sd {abs(fault.scale):g}"
                )
                self._fault(
                    round_,
                    "byzantine",
                    f"site {fault.site} sends {what} from now on",
                    site=fault.site,
                )
            elif fault.kind is FaultKind.REVOKE and fault.round == round_:
                await trio.to_thread.run_sync(self.federation.revoke, fault.site)
                self._fault(
                    round_,
                    "revoke",
                    f"credential of site {fault.site} revoked; status list "
                    "republished on the ledger",
                    site=fault.site,
                )
                self._event("revoked", site=fault.site, round=round_)
            elif fault.kind is FaultKind.LATE_JOIN and fault.round == round_:
                await self._late_join(round_, fault.site)
        if sc.withdraw_round == round_:
            await trio.to_thread.run_sync(self._withdraw, round_)
        if sc.erase_round == round_:
            await trio.to_thread.run_sync(self._erase, round_)

    async def _restart(self, name: str) -> int:
        for arm in self.arms:
            node = self._node(arm, name)
            arm.scopes[name] = await self.nursery.start(self._host, node)
            arm.nodes[name] = node
            arm.last_state[name] = node.state
            await self._connect_all(arm, only=name)
        first = self.arms[0].nodes[name]
        return first.round if first is not None else 0

    async def _cut(self) -> None:
        for arm in self.arms:
            for i, j in self.edges:
                a, b = self.names[i], self.names[j]
                na, nb = arm.nodes.get(a), arm.nodes.get(b)
                if na is None or nb is None or self._usable(a, b):
                    continue
                try:
                    await na.host.disconnect(nb.peer_id)
                except Exception as exc:  # libp2p raises many types here
                    logger.debug("disconnect %s-%s: %r", a, b, exc)

    async def _late_join(self, round_: int, name: str) -> None:
        fed = self.federation
        votes = await trio.to_thread.run_sync(fed.admit, name)
        await trio.to_thread.run_sync(fed.issue, name)
        await trio.to_thread.run_sync(fed.publish_status)
        await trio.to_thread.run_sync(self._join_governance, name)
        self._event("admitted", site=name, votes=votes, round=round_)
        await self._start_site(name)
        for arm in self.arms:
            await self._connect_all(arm, only=name)
        if Baseline.LOCAL_ONLY in self.scenario.baselines:
            self.local[name] = self._trainer(
                name, None, self.scenario.seed + 31 * self.index[name]
            )
            self.local_state[name] = dict(self.initial[name])
        if self.pooled is not None:
            self._rebuild_pooled()
        self._fault(
            round_,
            "late_join",
            f"site {name} admitted by a vote of {votes}, credential issued, "
            "joined the mesh",
            site=name,
        )

    def _pick_patient(self, name: str) -> str:
        active = self.federation.sites[name].active()
        if not active:
            raise RunFailed(f"site {name} has no patient with active consent left")
        return active[-1]

    def _withdraw(self, round_: int) -> None:
        name = self.names[0]
        pseudonym = self._pick_patient(name)
        self.federation.withdraw_consent(name, pseudonym)
        if self.pooled is not None:
            self.pooled.forget_inactive()
        self._event("consent_withdrawn", site=name, round=round_)

    def _erase(self, round_: int) -> None:
        name = self.names[1 % len(self.names)]
        pseudonym = self._pick_patient(name)
        site = self.federation.sites[name]
        case_id = site.gov().registry.find(pseudonym).case_id
        before = site.reads.get(case_id, 0)
        # Governance withdraws, drops the case from every trainer of the site,
        # deletes its files and rows (salt too), and logs the proof digest.
        report = self.federation.erase(name, pseudonym)
        if self.pooled is not None:
            self.pooled.forget_inactive()
        self.erased.append((name, pseudonym, case_id, before))
        self.erasure_reports.append({"site": name, "round": round_, **report.to_json()})
        self._event("erased", site=name, round=round_)

    # ----- step 4: evaluation ---------------------------------------------------------

    def _final_states(self) -> dict[str, dict[str, StateDict]]:
        """regime -> site -> final model."""
        out: dict[str, dict[str, StateDict]] = {}
        for arm in self.arms:
            out[arm.name] = dict(arm.last_state)
        if self.local_state:
            out[str(Baseline.LOCAL_ONLY)] = dict(self.local_state)
        if self.pooled_state and self.pooled is not None:
            out[str(Baseline.POOLED)] = dict.fromkeys(self.joined, self.pooled_state)
        return out

    def _evaluate(self) -> dict[str, list[ScanResult]]:
        t0 = time.perf_counter()
        results: dict[str, list[ScanResult]] = {n: [] for n in self.names}
        if not self.scenario.evaluate:
            return results
        finals = self._final_states()
        jobs = [
            (name, phantom)
            for name in self.names
            if name in self.joined
            for phantom in self.cohorts[self.index[name]].test
        ]

        def work(job: tuple[str, Any]) -> tuple[str, ScanResult]:
            name, phantom = job
            models = {
                regime: load(states[name], self.config)
                for regime, states in finals.items()
                if name in states
            }
            return name, evaluate_scan(phantom, models, DECENTRALIZED)

        from concurrent.futures import ThreadPoolExecutor

        done = 0
        with ThreadPoolExecutor(max_workers=self.cores) as pool:
            for name, result in pool.map(work, jobs):
                results[name].append(result)
                done += 1
                self.progress("evaluation", done, len(jobs), name)
        self._timed("evaluation", t0)
        return results

    # ----- metrics --------------------------------------------------------------------

    def _metrics(
        self, results: dict[str, list[ScanResult]], wall: float
    ) -> dict[str, Any]:
        sc = self.scenario
        main = self.arms[0]
        regimes = [a.name for a in self.arms] + [str(b) for b in sc.baselines]
        sites: dict[str, Any] = {}
        fed_sites = self.federation.sites
        for name in self.names:
            scans = results[name]
            mae, agreement, seg_err, seg_agree = thickness_summary(scans)
            sites[name] = {
                "profile": sc.site(name).profile,
                "n_train": len(fed_sites[name].active()),
                "n_test": len(scans),
                "joined": name in self.joined,
                "byzantine": name in self.byzantine,
                "dice": {
                    r: _mean([s.dice[r] for s in scans if r in s.dice]) for r in regimes
                },
                "thickness_mae_mm": mae,
                "thinning_agreement": agreement,
                "segment_error_mm": {str(k): v for k, v in seg_err.items()},
                "segment_agreement": {str(k): v for k, v in seg_agree.items()},
                "segment_thickness_mm": _segment_mean(scans, measured=True),
                "segment_truth_mm": _segment_mean(scans, measured=False),
                "bytes_sent": main.traffic[name].sent,
                "bytes_received": main.traffic[name].received,
                "consented_reads": sum(fed_sites[name].reads.values()),
                "epsilon_spent": self._epsilon_spent(name, DECENTRALIZED),
                "epsilon_by_regime": {
                    r: self._epsilon_spent(name, r) for r in self._governed_regimes()
                },
            }
        honest = [
            n for n in self.names if n not in self.byzantine and sites[n]["n_test"]
        ]
        dice_mean = {r: _mean([sites[n]["dice"][r] for n in honest]) for r in regimes}
        weights = [max(1.0, float(sites[n]["n_train"])) for n in self.names]
        matrix = expected_gossip_matrix(
            len(self.names), self.edges, weights, np.random.default_rng(sc.seed)
        )
        gap = spectral_gap(matrix, weights)
        gap_round = round_gap(
            len(self.names),
            self.edges,
            weights,
            np.random.default_rng(sc.seed + 2),
            sc.gossip_steps,
        )
        d0 = main.consensus[0] if main.consensus else 0.0
        self._outcomes(dice_mean, sites)
        erased_ok = all(not fed_sites[s].registered(p) for s, p, _, _ in self.erased)
        reads_after = sum(
            fed_sites[s].reads.get(c, 0) - before for s, _, c, before in self.erased
        )
        return {
            "scenario": sc.name,
            "description": sc.description,
            "sites": sites,
            "dice_mean": dice_mean,
            "dice_history": {
                "rounds": self.rounds_monitored,
                "regimes": self.history,
            },
            "consensus_distance": main.consensus,
            "consensus_by_arm": {a.name: a.consensus for a in self.arms},
            "consensus_expected": [
                d0 * r
                for r in simulated_distances(
                    len(self.names),
                    self.edges,
                    weights,
                    np.random.default_rng(sc.seed + 1),
                    sc.rounds,
                    sc.gossip_steps,
                )
            ],
            "consensus_predicted": predicted_distances(d0, gap_round, sc.rounds),
            "spectral_gap": gap,
            "spectral_gap_round": gap_round,
            "topology": {
                "kind": str(sc.topology),
                "edges": [list(e) for e in self.edges],
            },
            "exchanges": {a.name: dict(a.exchanges) for a in self.arms},
            "bytes_by_arm": {
                a.name: {n: t.sent for n, t in a.traffic.items()} for a in self.arms
            },
            "ledger_events": self.ledger_events,
            "governance": self.events,
            "erasure": {
                "patients_erased": len(self.erased),
                "salts_deleted": erased_ok,
                "reads_after_erasure": reads_after,
            },
            "erasure_reports": self.erasure_reports,
            "faults": self.faults,
            "model": {
                "size": str(sc.model),
                "parameters": count_parameters(build_model(self.config)),
            },
            "budget": {
                "rounds": sc.rounds,
                "local_steps": sc.local_steps,
                "gossip_steps": sc.gossip_steps,
                "batch_size": sc.batch_size,
                "pooled_batch_size": sc.batch_size * len(self.joined),
            },
            "privacy": self._privacy(),
            "timings_s": self.timings,
            "wall_seconds": round(wall, 1),
        }

    def _governed_regimes(self) -> list[str]:
        """The regimes that train through the sites' governed trainers."""
        regimes = [a.name for a in self.arms]
        if Baseline.LOCAL_ONLY in self.scenario.baselines:
            regimes.append(str(Baseline.LOCAL_ONLY))
        return regimes

    def _epsilon_spent(self, name: str, regime: str) -> float:
        """The DP epsilon the site spent in a regime (0.0 without DP or before
        joining).

        Read from the regime's account in the site's registry (see
        :meth:`_trainer`), which survives the site's restarts.
        """
        governance = self.federation.sites[name].governance
        if governance is None:
            return 0.0
        return epsilon_spent(governance.registry, regime)

    def _privacy(self) -> dict[str, Any]:
        """The sites' DP settings, and which regimes train under them."""
        sc = self.scenario
        rules = sc.privacy
        private: list[str] = []
        if rules.enabled:
            # The pooled baseline is the centralized reference: a plain
            # ml.train.Trainer, no DP-SGD.
            private = self._governed_regimes()
        return {
            "enabled": rules.enabled,
            "noise_multiplier": rules.noise_multiplier,
            "max_grad_norm": rules.max_grad_norm,
            "epsilon_budget": rules.epsilon_budget,
            "delta": rules.delta,
            "private_regimes": private,
        }


def _g(value: float | None) -> str:
    """A figure for a sentence: three significant digits, or n/a."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3g}"


def json_safe(value: Any) -> Any:
    """NaN and infinity as null, so ``metrics.json`` is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _segment_mean(scans: list[ScanResult], *, measured: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    for seg in range(1, 18):
        values = [
            (s.thickness_mm if measured else s.truth_mm).get(seg, math.nan)
            for s in scans
        ]
        out[str(seg)] = _mean(values)
    return out
