"""An LLM judge: a local model reads the request and the reply and rates the fit on a rubric.

The rating is the judge's *expected* score: the next-token probabilities of the digits 1 to 5 after the
rubric prompt, renormalized over those five, so a single forward pass scores a reply (no sampling, no
parsing of free text) and the score is smooth. The reward is ``(expected rating - 3) / 2`` in [-1, 1].
Default judge: the embedded SmolLM2-135M-Instruct. With ``with_profile`` the rubric includes the user's
stated preferences, making it a personalized judge.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rewards.text import _last_user_text, completion_texts

RUBRIC = (
    "You are a strict judge of assistant replies.\n"
    "User request: {request}\n"
    "{profile}"
    "Assistant reply: {reply}\n"
    "How well does the reply serve this user? Answer with one digit from 1 (poor) to 5 (excellent)."
)


class LLMJudge:
    """Rates replies with a local causal LM; see the module docstring for the scoring."""

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        with_profile: bool = True,
        max_reply_chars: int = 1200,
        batch_size: int = 8,
        population: Any = None,
        resolve_model: Callable[[str], Any] | None = None,
        report: Callable[[str, dict[str, float]], None] | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if resolve_model is None:
            raise ValueError("llm_judge needs resolve_model (the runner passes agents.policy.resolve_model)")
        if with_profile and population is None:
            raise ValueError("llm_judge: with_profile needs the users' population")
        path = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        digit_ids = [self.tokenizer.encode(str(d), add_special_tokens=False) for d in range(1, 6)]
        if any(len(ids) != 1 for ids in digit_ids):
            raise ValueError(f"llm_judge: the tokenizer of {model!r} does not encode the digits 1-5 as single tokens")
        self.digit_ids = [ids[0] for ids in digit_ids]
        self.population = population
        self.with_profile = with_profile
        self.max_reply_chars = max_reply_chars
        self.batch_size = batch_size
        self.report = report
        self.__name__ = "llm_judge"

    def _prompt(self, prompt: Any, reply: str, user_id: str | None) -> list[int]:
        profile = ""
        if self.with_profile and user_id is not None:
            profile = f"What the user told us: {self.population.user(user_id).stated_preferences()}\n"
        text = RUBRIC.format(request=_last_user_text(prompt), profile=profile, reply=reply[: self.max_reply_chars])
        encoded = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return list(encoded["input_ids"])

    def expected_ratings(self, prompts: Sequence[Any], replies: Sequence[str], user_ids: Sequence[str | None]) -> np.ndarray:
        import torch

        ids = [self._prompt(p, r, u) for p, r, u in zip(prompts, replies, user_ids)]
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        ratings = []
        for start in range(0, len(ids), self.batch_size):
            # Left-padded, so the last position is every prompt's own last token.
            batch = self.tokenizer.pad({"input_ids": ids[start : start + self.batch_size]}, padding=True,
                                       padding_side="left", return_tensors="pt")
            with torch.no_grad():
                logits = self.model(**batch, logits_to_keep=1).logits[:, -1, self.digit_ids]
            probabilities = torch.softmax(logits.float(), dim=-1).numpy()
            ratings.extend(probabilities @ np.arange(1, 6))
        return np.array(ratings, dtype=np.float64)

    def __call__(self, prompts: Any, completions: Any, **kwargs: Any) -> list[float | None]:
        replies = completion_texts(completions, kwargs)
        user_ids = kwargs.get("user_id") or [None] * len(replies)
        ratings = self.expected_ratings(prompts or [""] * len(replies), replies, user_ids)
        if self.report is not None and len(ratings):
            self.report(self.__name__, {"expected_rating": float(ratings.mean())})
        return ((ratings - 3.0) / 2.0).tolist()
