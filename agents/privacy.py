"""Differential privacy for training on users' own data: user-level DP-SGD (``privacy.dp:``).

**Privacy unit: a user.** Two training sets are neighbours when one holds all of one user's examples and the
other none of them, however many examples that user has. The guarantee is (epsilon, delta)-DP of the trained
weights (LoRA adapters, a reward model's adapters and head) with respect to adding or removing one user.

**Mechanism** (user-level DP-SGD, as in McMahan et al. 2018, "Learning Differentially Private Recurrent
Language Models"), one optimizer step:

1. Every training user is sampled independently with probability ``q = users_per_step / users`` (Poisson
   sampling of users, not of examples: a user's examples enter a step together or not at all).
2. For each sampled user, the gradient of their mean loss over up to :data:`EXAMPLES_PER_USER` of their
   examples (drawn afresh each step) is formed from per-example gradients (Opacus' per-sample gradient
   hooks, averaged per user).
3. Each user's gradient is clipped to L2 norm ``max_grad_norm`` (C) over all trainable parameters together;
   the clipped gradients are summed, Gaussian noise of std ``noise_multiplier * C`` is added to every
   coordinate, and the sum is divided by the expected number of users ``q * users``. A step that samples no
   user still adds the noise and steps (skipping it would leak that nobody was sampled).
4. AdamW steps on that noisy gradient (any optimizer is post-processing of it).

So each user changes the noisy sum by at most C in a step they are sampled in: one subsampled Gaussian
mechanism per step, with users as records.

**Accountant:** Opacus' RDP accountant for the Poisson-subsampled Gaussian mechanism (sample rate q, noise
multiplier, steps), converted to epsilon at ``delta``. Given ``epsilon``, the noise multiplier is the one
Opacus' ``get_noise_multiplier`` finds to reach it (to within 0.01) over the planned steps; given
``noise_multiplier``, epsilon is reported. ``delta`` defaults to 1/(users) rounded down to a power of ten.
Parts of a run trained on the same users (a learned reward model, then SFT) compose sequentially: the run's
epsilon and delta are the sums of theirs (basic composition, an upper bound); adapters trained on disjoint
users (SFT ``per: group``) compose in parallel: the maximum.

**Why Opacus hooks on LoRA parameters** (and not ``torch.func``): only LoRA parameters (and a reward model's
score head) are trainable under DP. Their layers are plain ``nn.Linear`` modules, which Opacus' hooks handle
exactly; the layers they cannot hook (``LlamaRMSNorm``) stay frozen, so they need no per-sample gradient, and
per-sample gradients of a few million adapter weights fit in memory where the full model's would not.

Why one module over 300 lines: the mechanism, its accounting and the loop that spends the budget are one
argument about one guarantee, read top to bottom; split, the claim above could no longer be checked in one place.

Not covered: the randomness is torch's ordinary generator (not Opacus' ``secure_mode``), and floating-point
attacks on the Gaussian sampler are out of scope: this is a research implementation of the accounting.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

EXAMPLES_PER_USER = 4
"""At most this many of a sampled user's examples form their gradient in a step (bounds a step's cost; the
privacy accounting does not depend on it: a user's whole contribution is clipped)."""
EXAMPLES_PER_FORWARD = 8
"""Examples whose per-example gradients are computed in one forward and backward pass (memory bound)."""
ACCOUNTANT = "rdp"

LossFn = Callable[[Any, Sequence[Any]], tuple[Any, list[int]]]
"""``loss_fn(model, examples) -> (losses, row_example)``: one loss per example (a tensor of shape
``(len(examples),)``), and for every row of the forward batch, the index of the example it belongs to (an
example may take several rows, e.g. a preference pair's chosen and rejected replies)."""


class PrivacySettingsError(ValueError):
    """A ``privacy.dp`` setting (or a batch/steps setting it depends on) that cannot work; the message names it."""


def default_delta(users: int) -> float:
    """The largest power of ten below 1/users (a meaningful delta must be below it): 80 users 0.01, 1000 1e-4."""
    delta = 10.0 ** math.floor(math.log10(1.0 / max(users, 2)))
    while delta * users >= 1.0:  # 1/users itself a power of ten (or log10 rounding up)
        delta /= 10.0
    return delta


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian steps, by Opacus' RDP accountant (inf without noise)."""
    if noise_multiplier == 0.0:
        return math.inf
    if steps == 0:
        return 0.0
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, sample_rate, steps)]
    with warnings.catch_warnings():  # "optimal order is the largest alpha": the bound holds, only looser
        warnings.filterwarnings("ignore", message="Optimal order")
        return float(accountant.get_epsilon(delta))


@dataclasses.dataclass
class PrivacyPlan:
    """How one model is trained privately and what it costs: everything eval.json reports about it."""

    users: int
    users_per_step: float
    steps: int
    max_grad_norm: float
    noise_multiplier: float
    delta: float
    target_epsilon: float | None = None
    epsilon: float = math.nan
    """Epsilon spent by the steps planned (the report's figure once training has run them all)."""

    @property
    def sample_rate(self) -> float:
        return self.users_per_step / self.users

    def as_dict(self) -> dict[str, Any]:
        """The figures for eval.json, report.md and W&B. An infinite epsilon (no noise) is None, with a note."""
        out = {
            "epsilon": self.epsilon if math.isfinite(self.epsilon) else None,
            "delta": self.delta, "noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate, "steps": self.steps, "users": self.users,
            "users_per_step": self.users_per_step, "accountant": ACCOUNTANT, "unit": "user",
        }
        if self.target_epsilon is not None:
            out["target_epsilon"] = self.target_epsilon
        if not math.isfinite(self.epsilon):
            out["note"] = "noise_multiplier 0: clipping only, no privacy guarantee (epsilon is infinite)"
        return out


def plan(dp: Any, *, users: int, users_per_step: float, steps: int, where: str = "trainer",
         run_users: int | None = None) -> PrivacyPlan:
    """The noise multiplier and the epsilon of training on ``users`` users, ``users_per_step`` of them expected
    per step, for ``steps`` steps under ``dp`` (the config's ``privacy.dp``: ``epsilon`` or ``noise_multiplier``,
    ``max_grad_norm``, ``delta``). ``where`` names the settings the batch comes from, for errors. The default
    delta comes from ``run_users``, all the users the run protects (default ``users``): one delta for a model
    trained on a group of them as for one trained on all."""
    if users < 2:
        raise PrivacySettingsError(f"privacy.dp: {users} training user(s) to protect; DP needs at least 2 (raise users.n_users)")
    if users_per_step > users:
        raise PrivacySettingsError(
            f"{where}: under privacy.dp a batch is users, and {users_per_step:g} per step is more than the {users} "
            f"training users; use at most {users}")
    delta = dp.delta if dp.delta is not None else default_delta(max(users, run_users or users))
    if delta >= 1.0 / users:
        raise PrivacySettingsError(
            f"privacy.dp.delta: {delta:g} is not below 1/(training users) = 1/{users}, which would allow releasing a "
            f"whole user's data; use a smaller delta (e.g. {default_delta(users):g}) or leave it unset")
    sample_rate = users_per_step / users
    if dp.noise_multiplier is not None:
        sigma = float(dp.noise_multiplier)
    else:
        from opacus.accountants.utils import get_noise_multiplier

        with warnings.catch_warnings():  # as in epsilon_spent
            warnings.filterwarnings("ignore", message="Optimal order")
            sigma = float(get_noise_multiplier(target_epsilon=dp.epsilon, target_delta=delta, sample_rate=sample_rate,
                                               steps=steps, accountant=ACCOUNTANT))
    out = PrivacyPlan(users=users, users_per_step=float(users_per_step), steps=steps, max_grad_norm=dp.max_grad_norm,
                      noise_multiplier=sigma, delta=delta, target_epsilon=dp.epsilon)
    out.epsilon = epsilon_spent(sigma, sample_rate, steps, delta)
    return out


def combine(parts: dict[str, dict[str, Any]], sequential: bool) -> dict[str, Any]:
    """One epsilon and delta for several private parts: summed (``sequential``: trained on the same users) or the
    largest (parallel: on disjoint users). An infinite part (None) makes the whole None."""
    epsilons = [p.get("epsilon") for p in parts.values()]
    deltas = [p["delta"] for p in parts.values()]
    if any(e is None for e in epsilons):
        epsilon = None
    else:
        epsilon = float(sum(epsilons)) if sequential else float(max(epsilons))
    delta = float(sum(deltas)) if sequential else float(max(deltas))
    composition = ("sequential (the same users): epsilons and deltas summed" if sequential
                   else "parallel (disjoint users): the largest epsilon and delta")
    return {"epsilon": epsilon, "delta": delta, "composition": composition}


def trainable_parameters(model: Any) -> list[tuple[str, Any]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def private_gradient(model: Any, loss_fn: LossFn, examples_by_user: Sequence[Sequence[Any]], *, max_grad_norm: float,
                     noise_std: float, expected_users: float, generator: Any) -> dict[str, float]:
    """Set ``.grad`` of ``model``'s trainable parameters to one step's noisy user-level gradient (module
    docstring, steps 2-3). ``model`` carries Opacus' per-sample hooks (a ``GradSampleModule``, or a model inside
    one); ``examples_by_user`` holds each sampled user's examples for this step (empty: no user sampled).

    Returns the step's mean loss over users (nan when none) and the share of users whose gradient was clipped.
    """
    import torch

    params = [p for _, p in trainable_parameters(model)]
    n_users = len(examples_by_user)
    per_user = [torch.zeros((n_users, *p.shape), dtype=p.dtype, device=p.device) for p in params] if n_users else []
    flat = [(u, x) for u, examples in enumerate(examples_by_user) for x in examples]
    user_losses = torch.zeros(n_users)
    for start in range(0, len(flat), EXAMPLES_PER_FORWARD):
        chunk = flat[start:start + EXAMPLES_PER_FORWARD]
        losses, row_example = loss_fn(model, [x for _, x in chunk])
        with warnings.catch_warnings():  # the hooked layers' inputs need no gradient of their own: expected
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            losses.sum().backward()  # per-example gradients: each row's grad_sample is d(its example's loss)/d(params)
        row_user = torch.tensor([chunk[i][0] for i in row_example])
        # A user's gradient is the mean over their examples: each row weighs 1/(that user's examples).
        weight = torch.tensor([1.0 / len(examples_by_user[chunk[i][0]]) for i in row_example])
        for p, acc in zip(params, per_user):
            grad_sample = p.grad_sample
            if grad_sample is None:  # a parameter this loss does not reach
                continue
            acc.index_add_(0, row_user, grad_sample * weight.view(-1, *([1] * (grad_sample.dim() - 1))))
            p.grad_sample = None
            p.grad = None
        for (u, _), loss in zip(chunk, losses.detach()):
            user_losses[u] += float(loss) / len(examples_by_user[u])
    clipped = 0.0
    if n_users:
        norms = torch.sqrt(sum(acc.flatten(1).pow(2).sum(1) for acc in per_user))
        factor = torch.clamp(max_grad_norm / (norms + 1e-6), max=1.0)
        clipped = float((norms > max_grad_norm).float().mean())
    for i, p in enumerate(params):
        total = (per_user[i] * factor.view(-1, *([1] * p.dim()))).sum(0) if n_users else torch.zeros_like(p)
        if noise_std > 0:
            total = total + torch.normal(0.0, noise_std, size=p.shape, generator=generator).to(p.dtype)
        p.grad = total / expected_users
    mean_loss = float(user_losses.mean()) if n_users else math.nan
    return {"loss": mean_loss, "users": float(n_users), "clipped": clipped}


def train_private(
    model: Any,
    examples: Sequence[Any],
    user_ids: Sequence[str],
    loss_fn: LossFn,
    dp_plan: PrivacyPlan,
    *,
    users: Sequence[str],
    learning_rate: float,
    seed: int,
    weight_decay: float = 0.0,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> PrivacyPlan:
    """Train ``model``'s trainable parameters by user-level DP-SGD for ``dp_plan.steps`` steps (module docstring).

    ``users`` are the users protected (the plan's ``users`` of them; a user without examples is sampled like any
    other and adds nothing); ``user_ids[i]`` owns ``examples[i]``. ``on_step(step, metrics)`` gets each step's
    loss, sampled users (with examples), clipped share and the epsilon spent so far. Returns the plan with the
    epsilon of the steps run. The model's per-sample hooks are removed again before returning.
    """
    import numpy as np
    import torch
    from opacus import GradSampleModule

    owners = list(dict.fromkeys(users))
    if len(owners) != dp_plan.users:
        raise ValueError(f"train_private: the plan is for {dp_plan.users} users, given {len(owners)}")
    by_user: dict[str, list[Any]] = {u: [] for u in owners}
    for user, example in zip(user_ids, examples, strict=True):
        if user not in by_user:
            raise ValueError(f"train_private: an example of user {user!r}, who is not among the users protected")
        by_user[user].append(example)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(int(seed))
    was_training = model.training
    model.train()  # Opacus refuses a module in eval mode (from_pretrained returns one)
    hooked = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    optimizer = torch.optim.AdamW([p for _, p in trainable_parameters(model)], lr=learning_rate, weight_decay=weight_decay)
    try:
        for step in range(1, dp_plan.steps + 1):
            sampled = [u for u in owners if rng.random() < dp_plan.sample_rate]
            batch = []
            for user in sampled:
                mine = by_user[user]
                if not mine:  # a zero gradient: nothing to compute
                    continue
                if len(mine) > EXAMPLES_PER_USER:
                    mine = [mine[i] for i in sorted(rng.choice(len(mine), EXAMPLES_PER_USER, replace=False))]
                batch.append(mine)
            stats = private_gradient(hooked, loss_fn, batch, max_grad_norm=dp_plan.max_grad_norm,
                                     noise_std=dp_plan.noise_multiplier * dp_plan.max_grad_norm,
                                     expected_users=dp_plan.users_per_step, generator=generator)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if on_step is not None:
                spent = epsilon_spent(dp_plan.noise_multiplier, dp_plan.sample_rate, step, dp_plan.delta)
                on_step(step, {**stats, "epsilon": spent})
    finally:
        hooked._close()  # removes the hooks and any grad_sample left: the model is plain again
        model.train(was_training)
    dp_plan.epsilon = epsilon_spent(dp_plan.noise_multiplier, dp_plan.sample_rate, dp_plan.steps, dp_plan.delta)
    return dp_plan


def causal_lm_loss(pad_token_id: int) -> LossFn:
    """Per-sequence loss of ``{"input_ids", "labels"}`` rows (labels -100 where not trained on): the mean token
    cross-entropy of each sequence on its own (HF's ``out.loss`` averages tokens over the whole batch, which
    would mix the users' examples)."""

    def loss(model: Any, rows: Sequence[dict[str, Any]]) -> tuple[Any, list[int]]:
        import torch
        import torch.nn.functional as F

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        targets = labels[:, 1:]
        token_loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
        counted = (targets != -100).float()
        return (token_loss * counted).sum(1) / counted.sum(1).clamp(min=1.0), list(range(len(rows)))

    return loss


class TrainerEvents:
    """Drives transformers ``TrainerCallback``s (the run's tracking, progress bar, learning curve) from a training
    loop of attune's own, so a private run logs and shows progress as a TRL trainer's does."""

    def __init__(self, callbacks: Sequence[Any], args: Any, max_steps: int, model: Any) -> None:
        from transformers import TrainerControl, TrainerState

        self.callbacks, self.args, self.model = list(callbacks), args, model
        self.state = TrainerState(max_steps=max_steps, global_step=0)
        self.control = TrainerControl()

    def _call(self, event: str, **kwargs: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self.args, self.state, self.control, model=self.model, **kwargs)

    def begin(self) -> None:
        self._call("on_train_begin")

    def step(self, step: int, metrics: dict[str, float]) -> None:
        self.state.global_step = step
        self._call("on_step_end")
        self._call("on_log", logs={k if k == "loss" else f"dp/{k}": v for k, v in metrics.items()})

    def end(self) -> None:
        self._call("on_train_end")


def private_trainer(dp: Any) -> Callable[..., dict[str, Any]]:
    """A function that trains a model by user-level DP-SGD under ``dp`` (the config's ``privacy.dp``) and returns
    its privacy accounting: what the runner hands to rewards that train on users' data (a learned reward model),
    which cannot import this module themselves.

    ``train(model, *, examples, user_ids, loss_fn, users, users_per_step, steps, learning_rate, seed, where)``.
    """

    def train(model: Any, *, examples: Sequence[Any], user_ids: Sequence[str], loss_fn: LossFn, users: Sequence[str],
              users_per_step: float, steps: int, learning_rate: float, seed: int, where: str = "batch size") -> dict[str, Any]:
        dp_plan = plan(dp, users=len(set(users)), users_per_step=users_per_step, steps=steps, where=where)
        train_private(model, examples, user_ids, loss_fn, dp_plan, users=users, learning_rate=learning_rate, seed=seed)
        return dp_plan.as_dict()

    return train
