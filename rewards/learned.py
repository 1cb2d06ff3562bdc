"""A learned Bradley-Terry reward model, trained with TRL's RewardTrainer on the users' pairwise choices.

Data: for sampled (training user, task) pairs, two candidate replies (fixed response styles from the
discrete environments, some cut short for variety); the user chooses one (Bradley-Terry on their noisy
utility). The model sees the user's request, phrased in their own style (their only visible cue), and
the reply, and learns ``score(chosen) > score(rejected)``. Its held-out accuracy is measured on pairs
from held-out users, against their noisy choices and against their noise-free preferences.

With ``source="human"`` and ``db`` (the feedback database of ``attune serve``) it learns from what real people
chose instead: each judgement that picked a reply is a pair (the request the person saw, the chosen and the
rejected reply); a seeded fifth of the pairs (at least one, when there are two or more) is held out to measure
its accuracy against their choices. ``pairs`` and ``held_out_pairs`` do not apply then.

With ``privacy.dp`` the runner passes ``private_training`` (:func:`agents.privacy.private_trainer`; rewards never
import agents): the model then trains LoRA adapters (r=8, all linear layers) and its score head by user-level
DP-SGD over the training users (``batch_size`` is the expected users per step, ``steps`` the steps), instead of
TRL's RewardTrainer; its privacy accounting is ``self.privacy``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.seeding import derive_seed, torch_seeded
from rewards.text import completion_texts


def preference_pairs(population: Any, users: Sequence[Any], n_pairs: int, seed: int, noise: float = 0.1) -> list[dict[str, Any]]:
    """``n_pairs`` conversational preference rows (``chosen``/``rejected`` message lists) from the users' choices."""
    from envs.discrete import RESPONSE_STYLES, render_style

    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n_pairs:
        profile = users[int(rng.integers(len(users)))]
        task = population.tasks[int(rng.integers(len(population.tasks)))]
        a, b = rng.choice(len(RESPONSE_STYLES), size=2, replace=False)
        replies = [render_style(RESPONSE_STYLES[int(i)], task) for i in (a, b)]
        replies = [r if rng.random() < 0.7 else r[: max(12, int(len(r) * rng.uniform(0.3, 0.9)))] for r in replies]
        user = population.simulated_user(profile.user_id, noise=noise)
        prefers_first = bool(user.choose([replies[0]], [replies[1]], [task], rng)[0])
        chosen, rejected = replies if prefers_first else replies[::-1]
        request = [{"role": "user", "content": user.ask(task)}]
        expected = user.utility([chosen, rejected], [task, task])
        rows.append({
            "user_id": profile.user_id,
            "chosen": request + [{"role": "assistant", "content": chosen}],
            "rejected": request + [{"role": "assistant", "content": rejected}],
            "truly_better": bool(expected[0] >= expected[1]),
        })
    return rows


def human_preference_pairs(db: str, seed: int, held_out_share: float = 0.2) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """People's choices in the feedback database ``db`` as conversational ``chosen``/``rejected`` rows, split
    (seeded) into training pairs and held-out pairs (a ``held_out_share``, at least one of two or more)."""
    from envs.people import preference_rows, require_choices

    rows = [{"chosen": p["prompt"] + p["chosen"], "rejected": p["prompt"] + p["rejected"]}
            for p in preference_rows(require_choices(db))]
    n_held = min(max(int(round(len(rows) * held_out_share)), 1), len(rows) - 1)
    held = set(np.random.default_rng(derive_seed(seed, "human-held-out")).permutation(len(rows))[:n_held].tolist())
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


class LearnedRewardModel:
    """Reward = the learned model's score of (request, reply). Trained when built; see the module docstring."""

    def __init__(
        self,
        base_model: str = "tiny-random",
        pairs: int = 512,
        held_out_pairs: int = 200,
        steps: int = 150,
        batch_size: int = 16,
        learning_rate: float = 1e-3,
        seed: int = 0,
        population: Any = None,
        resolve_model: Callable[[str], Any] | None = None,
        output_dir: Any = None,
        report: Callable[[str, dict[str, float]], None] | None = None,
        source: str = "users",
        db: str = "",
        private_training: Callable[..., dict[str, Any]] | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if population is None or resolve_model is None:
            raise ValueError("learned_reward_model needs the users' population and resolve_model (the runner passes both)")
        path = resolve_model(base_model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        with torch_seeded(derive_seed(seed, "reward-head")):  # the new head does not depend on the global RNG
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = self.tokenizer.pad_token_id
        self.check_params(source=source, db=db)
        if source == "human":
            train_rows, held_out = human_preference_pairs(db, seed)
        else:
            train_rows = preference_pairs(population, population.train_users, pairs, derive_seed(seed, "train-pairs"))
            held_out = preference_pairs(population, population.held_out_users, held_out_pairs,
                                        derive_seed(seed, "held-out-pairs"))
        folder = Path(output_dir) if output_dir is not None else None
        self.privacy: dict[str, Any] | None = None
        if private_training is not None:
            if source == "human":
                raise ValueError("privacy.dp: the learned reward model trains privately on simulated users' choices "
                                 "only; remove privacy.dp or use params.source: users")
            self.model = self._train_privately(model, train_rows, population, private_training, steps=steps,
                                               batch_size=batch_size, learning_rate=learning_rate, seed=seed)
        else:
            self.model = self._train(model, train_rows, folder, steps=steps, batch_size=batch_size,
                                     learning_rate=learning_rate, seed=seed)
        chosen = self.score_messages([r["chosen"] for r in held_out])
        rejected = self.score_messages([r["rejected"] for r in held_out])
        wins = chosen > rejected
        self.summary = {
            "heldout_accuracy": float(wins.mean()) if len(held_out) else float("nan"),
            "train_pairs": float(len(train_rows)),
            "heldout_pairs": float(len(held_out)),
        }
        if source != "human":  # simulated users' noise-free preferences are known; people's are not
            truly = np.array([r["truly_better"] for r in held_out])
            self.summary["heldout_accuracy_vs_true_preference"] = float(np.mean(wins == truly))
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            extra = {"privacy": self.privacy} if self.privacy is not None else {}
            (folder / "reward_model.json").write_text(json.dumps({"base_model": base_model, **self.summary, **extra}, indent=2))
        self.report = report
        self.__name__ = "learned_reward_model"

    @staticmethod
    def check_params(source: str = "users", db: str = "", **_: Any) -> None:
        """What can be judged before training: the data source, and that a human source's database has choices."""
        if source not in ("users", "human"):
            raise ValueError(f"params.source must be 'users' (simulated users' choices) or 'human' (people's choices "
                             f"in a feedback database), got {source!r}")
        if source == "human":
            if not db:
                raise ValueError("params.db: source human reads people's choices from a feedback database; give "
                                 "params: {source: human, db: feedback.sqlite} (the --db file of attune serve)")
            from envs.people import require_choices

            try:
                require_choices(db)
            except ValueError as exc:
                raise ValueError(f"params.db: {exc}") from None
        elif db:
            raise ValueError("params.db: a database is read only with source: human; add source: human or remove db")

    def _train(self, model: Any, rows: list[dict[str, Any]], folder: Path | None, *, steps: int, batch_size: int,
               learning_rate: float, seed: int) -> Any:
        import torch
        from datasets import Dataset
        from trl import RewardConfig, RewardTrainer

        args = RewardConfig(
            output_dir=str(folder / "reward_model" if folder else Path.cwd() / ".attune-reward-model"),
            max_steps=steps, per_device_train_batch_size=batch_size, learning_rate=learning_rate,
            logging_steps=max(1, steps // 10), save_strategy="no", report_to="none", seed=seed, max_length=256,
            use_cpu=not torch.cuda.is_available(), bf16=False, disable_tqdm=True,
        )
        trainer = RewardTrainer(
            model=model, args=args, processing_class=self.tokenizer,
            train_dataset=Dataset.from_list([{k: r[k] for k in ("chosen", "rejected")} for r in rows]),
        )
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # the run logs what matters: the held-out accuracy
        trainer.train()
        return trainer.model.eval()

    def _train_privately(self, model: Any, rows: list[dict[str, Any]], population: Any, private_training: Callable[..., Any],
                         *, steps: int, batch_size: int, learning_rate: float, seed: int) -> Any:
        from peft import LoraConfig, get_peft_model

        with torch_seeded(derive_seed(seed, "reward-lora")):
            model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules="all-linear"))
        self.privacy = private_training(
            model, examples=rows, user_ids=[r["user_id"] for r in rows], loss_fn=self._pair_loss,
            users=[u.user_id for u in population.train_users], users_per_step=batch_size, steps=steps,
            learning_rate=learning_rate, seed=derive_seed(seed, "reward-dp"),
            where="rewards.learned_reward_model.params.batch_size")
        return model.eval()

    def _pair_loss(self, model: Any, rows: list[dict[str, Any]]) -> tuple[Any, list[int]]:
        """Bradley-Terry loss of each pair, -log sigmoid(score(chosen) - score(rejected)), as RewardTrainer's;
        the chosen replies are the forward batch's first rows, the rejected ones the rest."""
        import torch.nn.functional as F

        texts = [self.tokenizer.apply_chat_template(r[side], tokenize=False) for side in ("chosen", "rejected") for r in rows]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=256)
        scores = model(**encoded).logits[:, 0]
        n = len(rows)
        return -F.logsigmoid(scores[:n] - scores[n:]), list(range(n)) * 2

    def score_messages(self, conversations: Sequence[list[dict[str, str]]], batch_size: int = 32) -> np.ndarray:
        import torch

        texts = [self.tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
        scores = []
        for start in range(0, len(texts), batch_size):
            encoded = self.tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True,
                                     truncation=True, max_length=256)
            with torch.no_grad():
                scores.extend(self.model(**encoded).logits[:, 0].float().tolist())
        return np.array(scores, dtype=np.float64)

    def __call__(self, prompts: Any, completions: Any, **kwargs: Any) -> list[float | None]:
        replies = completion_texts(completions, kwargs)
        conversations = [
            (list(p) if isinstance(p, list) else [{"role": "user", "content": str(p or "")}])
            + [{"role": "assistant", "content": r}]
            for p, r in zip(prompts or [None] * len(replies), replies)
        ]
        scores = self.score_messages(conversations)
        if self.report is not None and len(scores):
            self.report(self.__name__, {"score": float(scores.mean())})
        return scores.tolist()
