"""The base policy's evaluation, paid once: stored on disk and reused by every later run that would repeat it.

A run scores the untrained policy on held-out users before training (``eval_before.json``: the episodes
and the seed-to-seed means). That work depends only on the model's files, the env and user settings,
the evaluation settings, torch's thread count, and the code that plays and scores episodes, so the
cache key is a hash of exactly those (the model by content, the code by the syntax of ``envs/`` and of
the modules that generate and score, docstrings and comments left out). Any change to one of them is a
different key, never a stale hit.
Entries live in ``<attune cache>/evaluations/<key>.json`` (see :func:`agents.policy.cache_dir`);
``evaluation.cache: false`` turns the cache off for a run; deleting the folder clears it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

# Settings that change the base policy's replies or their scores (not: whether to evaluate, curves).
_EVALUATION_FIELDS = ("prompts", "max_new_tokens", "temperature", "top_p", "batch_size", "seed", "noise_seeds",
                      "balance_groups", "text_metrics")
_ROOT = Path(__file__).resolve().parents[1]
_CODE = (*sorted((_ROOT / "envs").rglob("*.py")),
         *(_ROOT / "experiments" / name for name in ("evaluate.py", "text_metrics.py", "metrics.py")),
         *(_ROOT / "agents" / name for name in ("policy.py", "rollouts.py", "__init__.py")), Path(__file__))


def _digest_files(paths: list[Path], root: Path | None = None) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root) if root else path.name).encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _code_digest(paths: list[Path]) -> str:
    """A hash of what the Python files do: their syntax trees without docstrings (comments and layout are not in
    the tree), so editing documentation keeps the cached evaluations; a file that does not parse, by its bytes."""
    import ast

    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        source = path.read_bytes()
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            digest.update(source)
            continue
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        digest.update(ast.dump(tree).encode())
    return digest.hexdigest()


def model_digest(model: str) -> str:
    """A hash of the model's files (weights, config, tokenizer), or the name where it has no local folder."""
    from agents.policy import resolve_model

    location = resolve_model(model)
    folder = Path(location)
    if not folder.is_dir():
        return f"name:{model}"
    return _digest_files(sorted(p for p in folder.rglob("*") if p.is_file()), folder)


def cache_key(config: Any) -> str:
    """Everything the base policy's evaluation depends on, hashed."""
    code = list(_CODE)
    if config.env.module:  # the user's own environment
        module = sys.modules.get(config.env.module)
        if module is not None and getattr(module, "__file__", None):
            code.append(Path(module.__file__))
    people = None
    if getattr(config.users, "from_feedback", None):  # the users are the people: their judgements make them
        from envs.people import read_judgements

        code.append(_ROOT / "experiments" / "feedback.py")
        people = hashlib.sha256(json.dumps(read_judgements(config.users.from_feedback), sort_keys=True,
                                           default=str).encode()).hexdigest()
    described = {
        "model": model_digest(config.policy.model),
        **({"people": people} if people else {}),
        "env": config.env.model_dump(mode="json"),
        "users": config.users.model_dump(mode="json"),
        "evaluation": config.evaluation.model_dump(mode="json", include=set(_EVALUATION_FIELDS)),
        "threads": config.threads,
        "code": _code_digest(code),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


def cache_folder() -> Path:
    from agents.policy import cache_dir

    return cache_dir() / "evaluations"


def load(key: str) -> dict[str, Any] | None:
    path = cache_folder() / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent, or a damaged entry: evaluate again
        return None


def store(key: str, evaluation: dict[str, Any]) -> Path | None:
    """Write an entry atomically (a run killed mid-write leaves no half file); None if the cache is unwritable."""
    from experiments.redact import redact_data

    folder = cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{key}.{os.getpid()}.tmp"
        partial.write_text(json.dumps(redact_data(evaluation)))
        os.replace(partial, folder / f"{key}.json")
    except OSError:
        return None
    return folder / f"{key}.json"


def base_evaluation(config: Any, play: Any, score: Any, tracker: Any, console: Any, resumed: bool,
                    shared: dict[str, Any] | None = None) -> tuple[list[Any] | None, list[float]]:
    """The base policy's episodes and its seed-to-seed means: the resumed run's own, the one ``shared`` by
    variants, the cached one, or played now (``play(policy_is_base, seed, description)``, scored with
    ``score``) and stored in the run folder and the cache. ``(None, [])`` when evaluation is off."""
    from envs.seeding import derive_seed
    from experiments import evaluate

    settings = config.evaluation
    if not settings.enabled:
        return None, []
    saved = None
    key = cache_key(config) if settings.cache else None
    if resumed and (tracker.run_dir / "eval_before.json").is_file():
        saved = json.loads((tracker.run_dir / "eval_before.json").read_text())
    else:
        if shared is None and key and (cached := load(key)):
            shared = cached
            console.print(f"base policy's evaluation: reused from {cache_folder() / key}.json")
        if shared is not None:
            saved = shared
            tracker.write_json("eval_before.json", saved)
            tracker.log({"mean_utility": saved["seed_means"][0]}, step=0, phase="eval")
    if saved is not None:
        before = [evaluate.EpisodeResult(**{k: v for k, v in e.items() if k != "score"}) for e in saved["episodes"]]
        return before, saved["seed_means"]
    before = play(settings.seed, "evaluating base policy")
    score(before)
    seed_means = [evaluate.summarize(before)["mean_utility"]]
    seed_scores = [[r.score for r in before]]
    for k in range(settings.noise_seeds):
        again = play(derive_seed(settings.seed, "noise-seed", k + 1), f"base policy, noise seed {k + 1}")
        seed_means.append(evaluate.summarize(again)["mean_utility"])
        seed_scores.append([r.score for r in again])
    tracker.log({"mean_utility": seed_means[0]}, step=0, phase="eval")
    evaluated = {"episodes": evaluate.episode_records(before), "seed_means": seed_means, "seed_scores": seed_scores}
    tracker.write_json("eval_before.json", evaluated)
    if key:
        store(key, evaluated)
    return before, seed_means
