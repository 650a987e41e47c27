"""Local training that reads only consented cases, with optional DP-SGD.

:class:`GovernedTrainer` is the daemon's training provider
(:class:`node.daemon.TrainingProvider`). Consent is checked at two places, so a
withdrawal takes effect before the next step:

- before every step, the data set is re-synchronised with the registry: cases
  whose consent was withdrawn, expired or erased are removed from it;
- on every read of a case's voxels (``ml.data.CaseDataset``'s ``on_read`` hook),
  the registry is asked again and a case without active consent raises
  :class:`ConsentNotActive` before any voxel is touched; the step then restarts
  on a fresh batch.

Before a case is first trained on, the model it starts from is saved (one
checkpoint shared by every case first used in that call, with the site's step
count), so :func:`node.governance.erasure.retrain_without` can later rebuild the
site's contribution without that case. Every model this trainer produces is
noted against the cases it read (round and digest), for the erasure report.

Differential privacy (policy ``[privacy]``): per-sample gradients are clipped
and noised through opacus (``GradSampleModule`` + ``DPOptimizer``), and an RDP
accountant (Mironov 2017) adds each step's cost at sampling rate
``batch_size / n_cases``. Crops are drawn uniformly with replacement, not by
Poisson sampling, so the reported epsilon is the standard approximation used
by DP-SGD implementations, not a proof. The spent epsilon is kept in the
registry (it survives restarts) and training stops before a step would exceed
the budget.

The DP counters belong to an *account* (``GovernedTrainer(account=...)``). A
site's daemon has one trainer and uses the default account ``""``, whose
counters keep their bare names, so the policy's budget is the site's. The
simulator gives each regime its own account: its local-only baseline and its
comparison arms are counterfactual worlds of the same site and must not spend
from, or count the steps of, the decentralized trainer. The step counter
``STEPS`` stays one per site: it is the clock that erasure checkpoints, usage
records and :func:`node.governance.erasure.retrain_without` read.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.losses.dice import DiceCELoss

from ml.data import TRAIN_SPACING_MM, Case, CaseDataset
from ml.model import PATCH_SIZE, ModelConfig, build_model
from ml.weights import model_digest, save_weights
from node.governance.errors import ConsentNotActive, PrivacyBudgetSpent
from node.governance.policy import Policy
from node.governance.registry import CaseId, ConsentState, PatientRegistry

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
STEPS = "steps"  # registry counter: local optimizer steps taken by this site
EPSILON = "epsilon"  # registry counter: DP epsilon spent so far
DP_STEPS = "dp_steps"  # registry counter: DP steps taken (for the accountant)
DP_RATE = "dp_rate"  # registry counter: the highest sampling rate used so far
_ACCOUNT = re.compile(r"[A-Za-z0-9_.-]*")


def account_counter(counter: str, account: str = "") -> str:
    """The registry name of a DP counter in an account.

    The default account ``""`` keeps the bare name (``epsilon``), so registries
    written before accounts existed are read unchanged; another account's
    counter is ``epsilon:ACCOUNT``.

    Raises:
        ValueError: ``account`` holds other characters than letters, digits,
            ``_``, ``.`` and ``-``.
    """
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise ValueError(
            "account: expected letters, digits, '_', '.' or '-' "
            f"(or '' for the site's own), got {account!r}"
        )
    return f"{counter}:{account}" if account else counter


def epsilon_spent(registry: PatientRegistry, account: str = "") -> float:
    """DP epsilon spent so far in ``account`` of the registry (0 without DP)."""
    return registry.counter(account_counter(EPSILON, account))


# registry -> account -> the lock its trainers hold from the budget check to
# the counters' update, so two trainers of one account never both take the
# last step the budget allows.
_account_locks: weakref.WeakKeyDictionary[PatientRegistry, dict[str, threading.Lock]]
_account_locks = weakref.WeakKeyDictionary()
_account_locks_guard = threading.Lock()


def _account_lock(registry: PatientRegistry, account: str) -> threading.Lock:
    with _account_locks_guard:
        locks = _account_locks.setdefault(registry, {})
        return locks.setdefault(account, threading.Lock())


class GovernedTrainer:
    """Train on the registry's consented cases only (a daemon training provider).

    Args:
        registry: the site's patient registry.
        policy: the application's policy (purpose, training, privacy, retention).
        model_config: the architecture the federation trains.
        patch: crop size in voxels (the inference window).
        spacing: training voxel size, mm.
        seed: seeds crop sampling.
        current_round: the site's current round (the model this trainer
            returns becomes round + 1); None counts calls instead.
        observer: called with the case id after each consented read (tests
            and audit instrumentation).
        admitted_peers: returns how many peers are admitted now (the
            daemon's ``len(node.admitted_peers())``); below the policy's
            ``peers.min_peers`` the trainer takes no step. None: not checked.
        account: whose DP counters (epsilon, DP steps, sampling rate) this
            trainer spends from and adds to; "" is the site's own (see the
            module docstring). Trainers of one account share one budget.

    Raises:
        ValueError: ``account`` is not a valid account name.
    """

    def __init__(
        self,
        registry: PatientRegistry,
        policy: Policy,
        model_config: ModelConfig,
        *,
        patch: Sequence[int] = PATCH_SIZE,
        spacing: Sequence[float] = TRAIN_SPACING_MM,
        seed: int = 0,
        current_round: Callable[[], int] | None = None,
        observer: Callable[[CaseId], None] | None = None,
        admitted_peers: Callable[[], int] | None = None,
        account: str = "",
    ) -> None:
        account_counter(EPSILON, account)  # checks the name before any work
        self.account = account
        self.registry = registry
        self.policy = policy
        self.model_config = model_config
        self.observer = observer
        self.current_round = current_round
        self.admitted_peers = admitted_peers
        self._calls = 0
        self._rng = np.random.default_rng(seed)
        self._dataset = CaseDataset([], spacing=spacing, patch=patch)
        self._dataset.on_read = self._on_read
        self._read: set[CaseId] = set()  # cases read during the current call
        self._model = build_model(model_config)
        self._loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self._optimizer: torch.optim.Optimizer | None = None
        self._dp: _DPState | None = None
        self._busy = threading.Lock()  # held by the thread running train()
        self._pending_forget: set[CaseId] = set()  # to drop before the next read

    # ----- TrainingProvider --------------------------------------------------

    @property
    def n_samples(self) -> float:
        """Number of cases with active consent (the site's averaging weight)."""
        return float(len(self._eligible()))

    @property
    def epsilon_spent(self) -> float:
        """DP epsilon spent so far in this trainer's account (0 without DP)."""
        return epsilon_spent(self.registry, self.account)

    def train(self, state: Mapping[str, torch.Tensor], steps: int) -> StateDict:
        """Train from ``state`` for up to ``steps`` steps on consented cases.

        Stops early (returning the state reached) when no consented case is
        left, or when a DP step would exceed the epsilon budget.
        """
        with self._busy:
            return self._train(state, steps)

    def _train(self, state: Mapping[str, torch.Tensor], steps: int) -> StateDict:
        self._model.load_state_dict(dict(state))
        self._sync()
        self._save_before_first_use(state)
        self._read = set()
        if self.admitted_peers is not None:
            peers = self.admitted_peers()
            if peers < self.policy.peers.min_peers:
                logger.info(
                    "not training: %d admitted peers, the policy needs %d",
                    peers,
                    self.policy.peers.min_peers,
                )
                steps = 0
        for _ in range(steps):
            if not self._step():
                break
        trained = {k: v.detach().clone() for k, v in self._model.state_dict().items()}
        self._calls += 1
        if self._read:
            round_ = (
                self.current_round() + 1
                if self.current_round is not None
                else self._calls
            )
            digest = model_digest(trained)
            self.registry.note_usage(sorted(self._read), round_, digest)
        return trained

    def forget(self, case_id: CaseId) -> None:
        """Drop a case and its cached voxels from memory (withdrawal, erasure).

        At once when no training is running; otherwise the training thread
        drops it before its next read (the data set is not thread-safe).
        """
        self._pending_forget.add(case_id)
        if self._busy.acquire(blocking=False):
            try:
                self._drain_forget()
            finally:
                self._busy.release()

    def _drain_forget(self) -> None:
        while self._pending_forget:
            self._dataset.remove(self._pending_forget.pop())

    # ----- consent -----------------------------------------------------------

    def _eligible(self) -> list[CaseId]:
        max_age = self._max_age_s()
        return [
            p.case_id
            for p in self.registry.patients()
            if p.state is ConsentState.ACTIVE
            and p.purpose == self.policy.purpose
            and self.registry.is_active(p.case_id, max_age_s=max_age)
        ]

    def _max_age_s(self) -> float | None:
        days = self.policy.retention.scan_days
        return days * 86400.0 if days else None

    def _on_read(self, case_id: CaseId) -> None:
        # The veto: raise before CaseDataset touches (or caches) any voxel.
        if not self.registry.is_active(case_id, max_age_s=self._max_age_s()):
            self._dataset.remove(case_id)
            raise ConsentNotActive("a case's consent is no longer active")
        self._read.add(case_id)
        if self.observer is not None:
            self.observer(case_id)

    def _sync(self) -> None:
        """Make the data set hold exactly the consented cases."""
        self._drain_forget()
        eligible = self._eligible()
        for case_id in self._dataset.case_ids:
            if case_id not in eligible:
                self._dataset.remove(case_id)
        known = set(self._dataset.case_ids)
        new = [c for c in eligible if c not in known]
        if not new:
            return
        # CaseDataset cannot grow: a new one is built when patients were
        # registered (their prepared volumes are read again on first use).
        cases = [self._dataset_case(c) for c in [*self._dataset.case_ids, *new]]
        self._dataset = CaseDataset(
            cases,
            spacing=self._dataset.spacing,
            patch=self._dataset.patch,
            on_read=self._on_read,
        )

    def _dataset_case(self, case_id: CaseId) -> Case:
        return Case(
            case_id,
            image_path=self.registry.file_path(case_id, "scan"),
            label_path=self.registry.file_path(case_id, "labels"),
        )

    def _save_before_first_use(self, state: Mapping[str, torch.Tensor]) -> None:
        unused = [
            p.case_id
            for p in self.registry.patients()
            if p.case_id in self._dataset.case_ids and p.first_checkpoint is None
        ]
        if not unused:
            return
        path = self.registry.checkpoint_path()
        save_weights(path, dict(state))
        step = int(self.registry.counter(STEPS))
        checkpoint_id = self.registry.add_checkpoint(path, step)
        for case_id in unused:
            self.registry.mark_first_use(case_id, checkpoint_id, step)

    # ----- one step ----------------------------------------------------------

    def _step(self) -> bool:
        """One optimizer step; False when nothing may be trained on."""
        batch_size = self.policy.training.batch_size
        while True:
            self._sync()
            if len(self._dataset) == 0:
                logger.info("no consented case left to train on")
                return False
            try:
                x, y = self._dataset.sample_batch(self._rng, batch_size)
                break
            except ConsentNotActive:
                continue  # withdrawn between the sync and the read: resample
        if self.policy.privacy.enabled:
            if not self._dp_step(x, y):
                return False
        else:
            optimizer = self._plain_optimizer()
            self._model.train()
            optimizer.zero_grad(set_to_none=True)
            self._loss(self._model(x), y).backward()
            optimizer.step()
        self.registry.set_counter(STEPS, self.registry.counter(STEPS) + 1)
        return True

    def _plain_optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(
                self._model.parameters(), lr=self.policy.training.lr
            )
        return self._optimizer

    def _dp_step(self, x: torch.Tensor, y: torch.Tensor) -> bool:
        rules = self.policy.privacy
        if self._dp is None:
            self._dp = _DPState(self._model, self.policy, self.registry, self.account)
        sample_rate = min(1.0, len(x) / max(1, len(self._dataset)))
        with _account_lock(self.registry, self.account):
            self._dp.catch_up()
            projected = self._dp.epsilon_after(sample_rate)
            if projected > rules.epsilon_budget:
                logger.warning(
                    "DP budget: another step would spend epsilon %.3f > %.3f; stopping",
                    projected,
                    rules.epsilon_budget,
                )
                return False
            self._dp.step(x, y, self._loss, sample_rate)
        return True


class _DPState:
    """opacus wrappers and the accountant for one trainer.

    The accountant's history is the account's (registry counters
    ``dp_steps``, ``dp_rate``, ``epsilon``, named by :func:`account_counter`).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        policy: Policy,
        registry: PatientRegistry,
        account: str,
    ) -> None:
        # Imported here: opacus is heavy and only DP sites need it.
        from opacus import GradSampleModule
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer

        rules = policy.privacy
        self.rules = rules
        self.registry = registry
        self.steps_name = account_counter(DP_STEPS, account)
        self.rate_name = account_counter(DP_RATE, account)
        self.epsilon_name = account_counter(EPSILON, account)
        self.module = GradSampleModule(model)
        self.optimizer = DPOptimizer(
            torch.optim.Adam(self.module.parameters(), lr=policy.training.lr),
            noise_multiplier=rules.noise_multiplier,
            max_grad_norm=rules.max_grad_norm,
            expected_batch_size=policy.training.batch_size,
        )
        self.accountant = RDPAccountant()
        self.known = 0  # the account's DP steps the accountant's history holds

    def catch_up(self) -> None:
        """Add the account's steps this accountant has not seen to its history.

        Steps taken before a restart, or by another trainer of the account,
        are in the registry only: each counts at the highest sampling rate
        the account used so far (an upper bound on its cost). The trainer's
        own steps keep their exact rates.
        """
        taken = int(self.registry.counter(self.steps_name))
        if taken > self.known:
            rate = self.registry.counter(self.rate_name) or 1.0
            missed = (self.rules.noise_multiplier, rate, taken - self.known)
            self.accountant.history.append(missed)
            self.known = taken

    def epsilon_after(self, sample_rate: float) -> float:
        trial = list(self.accountant.history)
        trial.append((self.rules.noise_multiplier, sample_rate, 1))
        probe = type(self.accountant)()
        probe.history = trial
        return float(probe.get_epsilon(self.rules.delta))

    def step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        sample_rate: float,
    ) -> None:
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        # opacus hooks every layer with a full backward hook; on the input
        # layer, whose input needs no gradient, torch warns at every step.
        # The input is made to require one, so the warning never arises (the
        # input gradient costs 0-5 % of a step, measured on CPU). Silencing
        # it per step with warnings.catch_warnings was rejected: that swaps the
        # process-wide filter list, so two trainers stepping in threads undo
        # each other's filter and the warning escapes.
        x = x.detach().requires_grad_(True)
        loss: Any = loss_fn(self.module(x), y)  # torch's backward is untyped
        loss.backward()
        self.optimizer.step()
        self.accountant.step(
            noise_multiplier=self.rules.noise_multiplier, sample_rate=sample_rate
        )
        epsilon = float(self.accountant.get_epsilon(self.rules.delta))
        if not math.isfinite(epsilon):
            raise PrivacyBudgetSpent("the accountant returned a non-finite epsilon")
        self.known += 1
        registry = self.registry
        registry.set_counter(self.steps_name, registry.counter(self.steps_name) + 1)
        rate = max(sample_rate, registry.counter(self.rate_name))
        registry.set_counter(self.rate_name, rate)
        registry.set_counter(self.epsilon_name, epsilon)
