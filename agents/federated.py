"""Federated personalization: every simulated user (or group) is a client that keeps its own data; a server
averages the clients' LoRA adapters round by round (FedAvg, McMahan et al. 2017; FedProx, Li et al. 2020).

A round: the server samples ``clients_per_round`` clients, sends each the global adapter, each trains it for
``local_steps`` steps on its own data only, and the server replaces the global adapter by the example-weighted
mean of the clients' adapters (FedAvg). What a client trains on (``local_method``):

- ``sft``: the client's users' own texts (their past requests and writing samples,
  :func:`agents.sft.user_texts`), the classic "fine-tune on the user's own texts";
- ``dpo``: the client's users' own pairwise choices between two replies the initial global policy sampled to
  their own opening requests (:func:`agents.dpo.collect_preferences`, each client judged by its own users).
  The pairs are collected once, from the initial global policy, before the first round.

``aggregation: fedprox`` adds ``proximal_mu / 2 * ||w - w_global||^2`` to every local loss, which keeps a
client's adapter near the global one when the clients' data differ. ``secure_aggregation: true`` has each
client send only its example-weighted update masked with pairwise additive masks (Bonawitz et al. 2017, without
the dropout recovery): clients ``i < j`` of a round derive the same mask from a seed they share, ``i`` adds it
and ``j`` subtracts it, so the masks cancel in the server's sum and the server never sees one client's update.
The shared seed stands in for the pair's key agreement (a simulation: the seeds come from the run's seed).

Personalization: after the last round each held-out user (who never took part in training) gets the global
adapter plus ``personalize_steps`` SFT steps on their own texts (a new user brings texts, not yet choices), as
their own adapter. The runner scores the global adapter (the run's ``after``) and these personalized adapters
on the same held-out conversations; both land in ``eval.json``'s ``federated`` section with the per-round
losses.

Engine: the clients run as Ray tasks, one task per client per round, on the run's local Ray (or on the cluster
``RAY_ADDRESS`` names). Flower's simulation engine was the other candidate: ``flwr[simulation]`` 1.42 pins
ray 2.55.1 (attune pins 2.60) and plain ``flwr`` downgrades protobuf, rich and typer (attune's CLI stack);
clients as plain Ray tasks gave the same losses as Flower's with no new dependency, so they are Ray tasks.

LoRA: ``policy.lora`` when set, otherwise r=8, alpha 16 on every linear layer (as :mod:`agents.sft`); only
the adapter travels between server and clients. ``trainer:`` settings go to the clients' TRL config
(``SFTConfig`` or ``DPOConfig``); the number of steps is ``method_settings.local_steps``.

Why one module over 300 lines: the server loop, the clients' Ray task, FedAvg/FedProx and the pairwise masks
are one protocol; split, the claim that the server sees only masked sums could no longer be checked in one
place.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from agents import MethodSettings, MethodSpec, TrainedPolicy, TrainerSettingsError, TrainingJob, build_trl_config
from agents.policy import adapter_config
from agents import dpo as dpo_method
from agents import sft as sft_method
from envs.seeding import derive_seed, torch_seeded

DEFAULT_SETTINGS: dict[str, Any] = {k: v for k, v in sft_method.DEFAULT_SETTINGS.items() if k != "max_steps"}
"""The clients' TRL defaults with ``local_method: sft`` (agents.sft's, less max_steps: local_steps sets it)."""
DPO_DEFAULTS: dict[str, Any] = {k: v for k, v in dpo_method.DEFAULT_SETTINGS.items() if k != "max_steps"}

DEFAULT_CLIENTS_PER_ROUND = 8
MASK_SCALE = 1.0e3
"""Standard deviation of the additive masks: far above any update, so a masked update says nothing of its own."""


class Settings(MethodSettings):
    rounds: int = Field(3, ge=1, description="federated rounds: the server sends the global adapter, clients train, "
                        "the server aggregates")
    clients_per_round: int | None = Field(
        None, ge=1, description="clients sampled (without replacement) each round; null: 8, or every client where "
        "there are fewer")
    client: Literal["user", "group"] = Field("user", description="who a client is: one training user, or one "
                                             "preference group of training users")
    local_method: Literal["sft", "dpo"] = Field(
        "sft", description="what a client trains on: sft on its users' own texts, or dpo on its users' own "
        "pairwise choices")
    local_steps: int = Field(4, ge=1, description="optimizer steps of each client in each round")
    aggregation: Literal["fedavg", "fedprox"] = Field(
        "fedavg", description="fedavg: example-weighted mean of the clients' adapters; fedprox: the same, with "
        "proximal_mu/2*||w - w_global||^2 added to every local loss")
    proximal_mu: float = Field(0.0, ge=0.0, allow_inf_nan=False, description="aggregation: fedprox: weight of the "
                               "proximal term")
    secure_aggregation: bool = Field(False, description="clients send pairwise-masked updates; the server sees "
                                     "only their sum")
    personalize_steps: int = Field(4, ge=0, description="SFT steps on each held-out user's own texts from the "
                                   "global adapter, for the personalized evaluation (0: none)")
    max_new_tokens: int = Field(32, ge=1, description="local_method: dpo: length limit of the sampled replies")
    temperature: float = Field(0.9, gt=0.0, allow_inf_nan=False, description="local_method: dpo: sampling "
                               "temperature of the replies")

    @model_validator(mode="after")
    def _proximal_term(self) -> "Settings":
        if self.aggregation == "fedprox" and self.proximal_mu <= 0:
            raise ValueError("proximal_mu: aggregation: fedprox needs proximal_mu > 0 (e.g. 0.01)")
        if self.aggregation == "fedavg" and self.proximal_mu > 0:
            raise ValueError("proximal_mu: is only used by aggregation: fedprox; set aggregation: fedprox or "
                             "remove proximal_mu")
        if self.secure_aggregation and self.clients_per_round == 1:
            raise ValueError("secure_aggregation: masks cancel only in a sum of two or more clients; raise "
                             "clients_per_round")
        return self


def check_settings(settings: dict[str, Any], output_dir: Any, seed: int) -> None:
    """``trainer:`` goes to the clients' SFTConfig or DPOConfig; steps are ``method_settings.local_steps``."""
    from trl import DPOConfig, SFTConfig

    if "max_steps" in settings:
        raise TrainerSettingsError("trainer.max_steps: a federated client trains method_settings.local_steps steps "
                                   "a round; set that instead")
    known = {f.name for f in dataclasses.fields(SFTConfig)} | {f.name for f in dataclasses.fields(DPOConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise TrainerSettingsError(f"trainer.{unknown[0]}: not a field of trl.SFTConfig or trl.DPOConfig (the "
                                   "clients' local trainers)")


def check_population(options: Settings, population: Any) -> None:
    """Enough clients for ``clients_per_round``: the training users (client: user) or their groups."""
    users = population.train_users
    clients = len(users) if options.client == "user" else len({u.group for u in users})
    per_round = options.clients_per_round or min(DEFAULT_CLIENTS_PER_ROUND, clients)
    if per_round > clients:
        raise TrainerSettingsError(
            f"method_settings.clients_per_round: {per_round} is more than the {clients} clients (client: "
            f"{options.client}, {len(users)} training users); lower it, or raise users.n_users")
    if options.secure_aggregation and per_round < 2:
        raise TrainerSettingsError(
            f"method_settings.secure_aggregation: needs two or more clients a round, and client: {options.client} "
            f"gives {clients}; use client: user")


# ------------------------------------------------------------------------------------------------ aggregation


def lora_state(model: Any) -> dict[str, Any]:
    """The adapter's weights (the model's trainable parameters), detached copies on the CPU."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def load_lora_state(model: Any, state: Mapping[str, Any], adapter: str = "default") -> None:
    """Copy ``state`` (named for the ``default`` adapter) into ``adapter``'s weights of ``model``."""
    import torch

    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            parameters[name.replace(".default.", f".{adapter}.")].copy_(value)


def fedavg(client_states: Sequence[Mapping[str, Any]], examples: Sequence[int]) -> dict[str, Any]:
    """The example-weighted mean of the clients' adapters, ``sum_k n_k w_k / sum_k n_k`` (in float64)."""
    total = float(sum(examples))
    return {
        name: (sum(float(n) * state[name].double() for state, n in zip(client_states, examples)) / total).to(
            client_states[0][name].dtype)
        for name in client_states[0]
    }


def pair_mask(like: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """The additive mask two clients derive from their shared ``seed``: Gaussian noise of :data:`MASK_SCALE`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(value.shape, generator=generator, dtype=torch.float64) * MASK_SCALE
            for name, value in like.items()}


def masked_update(update: Mapping[str, Any], client: int, round_clients: Sequence[int], round_seed: int) -> dict[str, Any]:
    """``update`` (float64) plus the client's pairwise masks: ``+mask(i, j)`` towards every later client ``j`` of the
    round, ``-mask(j, i)`` towards every earlier one, so the masks of a round cancel in the sum of its updates."""
    masked = {name: value.double().clone() for name, value in update.items()}
    for other in round_clients:
        if other == client:
            continue
        low, high = min(client, other), max(client, other)
        mask = pair_mask(update, derive_seed(round_seed, "secure-aggregation", low, high))
        sign = 1.0 if client == low else -1.0
        for name in masked:
            masked[name] += sign * mask[name]
    return masked


def secure_sum(masked_updates: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the server computes from the masked updates: their sum (the masks cancel; float64)."""
    return {name: sum(u[name] for u in masked_updates) for name in masked_updates[0]}


def aggregate(global_state: Mapping[str, Any], results: Sequence["ClientResult"]) -> dict[str, Any]:
    """The server's new global adapter: FedAvg of the clients' adapters, or, from masked updates, the global
    adapter plus the sum of the masked example-weighted updates over the examples (the same mean)."""
    examples = [res.examples for res in results]
    if not any(res.masked for res in results):
        return fedavg([res.update for res in results], examples)
    if not all(res.masked for res in results):
        raise ValueError("a round mixes masked and plain updates")
    total = secure_sum([res.update for res in results])
    return {name: (global_state[name].double() + total[name] / sum(examples)).to(global_state[name].dtype)
            for name in global_state}


# ------------------------------------------------------------------------------------------------ a client


@dataclasses.dataclass
class ClientPlan:
    """What the server asks one client to do in one round."""

    name: str
    local_method: Literal["sft", "dpo"]
    steps: int
    trainer_settings: dict[str, Any]
    seed: int
    output_dir: str
    proximal_mu: float = 0.0
    threads: int = 1
    secure: tuple[int, tuple[int, ...], int] | None = None
    """``(this client's index, the round's client indices, the round's seed)``: send a masked update."""


@dataclasses.dataclass
class ClientResult:
    name: str
    examples: int
    loss: float
    update: dict[str, Any]
    """The client's adapter; with secure aggregation its masked example-weighted change ``n * (w - w_global)``."""
    masked: bool = False


def _proximal(trainer_class: type, mu: float, anchor: dict[str, Any]) -> type:
    """``trainer_class`` with FedProx's ``mu/2 * ||w - w_global||^2`` added to its loss."""

    class ProximalTrainer(trainer_class):  # type: ignore[misc, valid-type]
        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                          num_items_in_batch=num_items_in_batch)
            loss = result[0] if return_outputs else result
            distance = sum(((p - anchor[name].to(p.device)) ** 2).sum()
                           for name, p in model.named_parameters() if name in anchor)
            loss = loss + 0.5 * mu * distance
            return (loss, result[1]) if return_outputs else loss

    ProximalTrainer.__name__ = f"Proximal{trainer_class.__name__}"
    return ProximalTrainer


def train_client(model: Any, tokenizer: Any, global_state: Mapping[str, Any], rows: list[dict[str, Any]],
                 plan: ClientPlan) -> ClientResult:
    """One client's round: the global adapter in, ``plan.steps`` steps on its own ``rows``, its update out.

    ``model`` is the client's own copy of the LoRA policy (a Ray task gets a fresh one); it is modified.
    """
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    torch.set_num_threads(plan.threads)
    load_lora_state(model, global_state)
    if plan.local_method == "dpo":
        trainer_class, config_class, defaults = DPOTrainer, DPOConfig, DPO_DEFAULTS
    else:
        trainer_class, config_class, defaults = SFTTrainer, SFTConfig, DEFAULT_SETTINGS
    if plan.proximal_mu > 0:
        trainer_class = _proximal(trainer_class, plan.proximal_mu, {k: v.clone() for k, v in global_state.items()})
    settings = {**plan.trainer_settings, "max_steps": plan.steps}
    args = build_trl_config(config_class, defaults, settings, plan.output_dir, plan.seed)
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    state = lora_state(model)
    if plan.secure is None:
        return ClientResult(plan.name, len(rows), float(np.mean(losses)) if losses else math.nan, state)
    index, members, round_seed = plan.secure
    weighted = {name: len(rows) * (state[name].double() - global_state[name].double()) for name in state}
    return ClientResult(plan.name, len(rows), float(np.mean(losses)) if losses else math.nan,
                        masked_update(weighted, index, members, round_seed), masked=True)


def _client_task(model: Any, tokenizer: Any, global_state: Any, rows: Any, plan: ClientPlan) -> ClientResult:
    """The Ray task body (module level: workers import it by name)."""
    return train_client(model, tokenizer, global_state, rows, plan)


# ------------------------------------------------------------------------------------------------ the server


def client_data(job: TrainingJob, options: Settings) -> dict[str, list[dict[str, Any]]]:
    """Each client's own training rows, built from its own users only (clients without data are left out)."""
    population = job.population
    users = population.train_users
    owner = {u.user_id: (u.user_id if options.client == "user" else u.group) for u in users}
    names = list(dict.fromkeys(owner.values()))
    if options.local_method == "sft":
        data = {name: sft_method.user_texts([u for u in users if owner[u.user_id] == name]) for name in names}
    else:
        from agents.rollouts import build_prompt_dataset, make_env

        env = make_env(job.env_id, **job.env_kwargs)
        rows = build_prompt_dataset(env, job.prompts, seed=derive_seed(job.seed, "federated-prompts"))
        noise = float(job.env_kwargs.get("noise", 0.1))
        data = {}
        for k, name in enumerate(names):
            mine = [r for r in rows if owner[r["user_id"]] == name]
            if not mine:
                continue
            # Each client's users judge replies the initial global policy sampled to their own requests.
            pairs, _ = dpo_method.collect_preferences(
                job.model, job.tokenizer, mine, population, samples_per_prompt=2, max_new_tokens=options.max_new_tokens,
                temperature=options.temperature, noise=noise, seed=derive_seed(job.seed, "federated-choices", k))
            data[name] = pairs
    return {name: rows for name, rows in data.items() if rows}


@contextlib.contextmanager
def _ray_running(job: TrainingJob) -> Iterator[Any]:
    """The job's Ray (the runner's local one or a cluster); called as a library, a 2-CPU local Ray for the call."""
    import ray

    with job.local_ray():
        if ray.is_initialized():
            yield ray
            return
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()  # never `ray stop`: it would end every Ray process on the machine


def train(job: TrainingJob) -> TrainedPolicy:
    import torch
    from peft import get_peft_model

    options = Settings.of(job.method_settings)
    clients = client_data(job, options)  # dpo: sampled from the initial global policy, before any adapter
    names = list(clients)
    per_round = options.clients_per_round or min(DEFAULT_CLIENTS_PER_ROUND, len(names))
    if per_round > len(names):
        raise TrainerSettingsError(
            f"method_settings.clients_per_round: {per_round} is more than the {len(names)} clients with data "
            f"(client: {options.client}); lower it, or raise users.n_users" + (" or prompts" if options.local_method == "dpo" else ""))
    if options.secure_aggregation and per_round < 2:
        raise TrainerSettingsError("method_settings.secure_aggregation: needs two or more clients a round; "
                                   "use client: user or more groups")
    lora = adapter_config(job.peft_config)
    with torch_seeded(derive_seed(job.seed, "federated-adapter-init")):
        model = get_peft_model(job.model, lora)
    global_state = lora_state(model)
    initial_state = {k: v.clone() for k, v in global_state.items()}
    trainer_settings = dict(job.trainer_settings)
    threads = torch.get_num_threads()
    rng = np.random.default_rng(derive_seed(job.seed, "federated-client-sampling"))
    rounds: list[dict[str, Any]] = []
    personal: dict[str, dict[str, Any]] = {}
    held_out = list(job.population.held_out_users) if options.personalize_steps else []
    with _ray_running(job) as ray:
        task = ray.remote(num_cpus=1, max_retries=0)(_client_task)
        model_ref, tokenizer_ref = ray.put(model), ray.put(job.tokenizer)
        for r in range(options.rounds):
            chosen = sorted(rng.choice(len(names), size=per_round, replace=False).tolist())
            round_seed = derive_seed(job.seed, "federated-round", r)
            state_ref = ray.put(global_state)
            plans = [ClientPlan(
                name=names[k], local_method=options.local_method, steps=options.local_steps,
                trainer_settings=trainer_settings, seed=derive_seed(job.seed, "federated-client", r, k),
                output_dir=str(job.output_dir / "federated" / f"round-{r + 1}" / f"client-{k}"),
                proximal_mu=options.proximal_mu, threads=threads,
                secure=(k, tuple(chosen), round_seed) if options.secure_aggregation else None,
            ) for k in chosen]
            results: list[ClientResult] = ray.get(
                [task.remote(model_ref, tokenizer_ref, state_ref, clients[p.name], p) for p in plans])
            examples = [res.examples for res in results]
            new_state = aggregate(global_state, results)
            change = math.sqrt(sum(float(((new_state[n] - global_state[n]).double() ** 2).sum()) for n in new_state))
            global_state = new_state
            entry = {"round": r + 1, "clients": [res.name for res in results], "examples": int(sum(examples)),
                     "loss": float(np.average([res.loss for res in results], weights=examples)),
                     "client_losses": [res.loss for res in results], "global_change": change}
            rounds.append(entry)
            if job.log is not None:
                job.log({"federated/round": r + 1, "federated/loss": entry["loss"],
                         "federated/clients": len(results), "federated/examples": entry["examples"],
                         "federated/global_change": change})
        if held_out:
            state_ref = ray.put(global_state)
            plans = [ClientPlan(
                name=u.user_id, local_method="sft", steps=options.personalize_steps, trainer_settings=trainer_settings,
                seed=derive_seed(job.seed, "federated-personalize", i), threads=threads,
                output_dir=str(job.output_dir / "federated" / "personalize" / u.user_id),
            ) for i, u in enumerate(held_out)]
            for res in ray.get([task.remote(model_ref, tokenizer_ref, state_ref, sft_method.user_texts([u]), p)
                                for u, p in zip(held_out, plans)]):
                personal[res.name] = res.update
    load_lora_state(model, global_state)
    for user_id, state in personal.items():
        model.add_adapter(user_id, lora)
        load_lora_state(model, state, adapter=user_id)
    model.set_adapter("default")
    section = {
        "engine": "ray tasks", "rounds": options.rounds, "client": options.client, "clients": len(names),
        "clients_per_round": per_round, "local_method": options.local_method, "local_steps": options.local_steps,
        "aggregation": options.aggregation, "proximal_mu": options.proximal_mu,
        "secure_aggregation": options.secure_aggregation, "personalize_steps": options.personalize_steps,
        "personalized_users": len(personal), "per_round": rounds,
        "round_loss": [entry["loss"] for entry in rounds],
        "adapter_change": math.sqrt(sum(float(((global_state[n] - initial_state[n]) ** 2).sum()) for n in global_state)),
    }
    trained = TrainedPolicy(model, adapter_for=lambda user_id: "default", extras={"federated.json": section},
                            report={"federated": section}, report_section="federated", label="global")
    if personal:
        trained.also_evaluate["personalized"] = TrainedPolicy(
            model, adapter_for=lambda user_id: user_id if user_id in personal else "default")
    return trained


METHOD = MethodSpec(
    name="federated",
    description="federated LoRA: each user (or group) a client training on its own data (sft on its texts, dpo on "
                "its choices), FedAvg/FedProx rounds on Ray tasks, optional secure aggregation; global and "
                "personalized adapters evaluated",
    train=train, check_trainer=check_settings, settings=Settings, trainer_defaults=DEFAULT_SETTINGS,
    check_population=check_population,
    multi_turn=True,  # trains on the users' texts or single replies; the adapters then serve conversations
    resumable=False,  # many short trainers, one per client and round
    uses_prompts=True,  # local_method: dpo draws job.prompts opening requests of the training users
)
