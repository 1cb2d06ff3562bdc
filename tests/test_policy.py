import pytest

from agents.policy import (
    ModelNotAvailableError,
    check_model_available,
    generate_replies,
    load_policy,
    resolve_model,
)


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer, _ = load_policy("tiny-random")
    return model, tokenizer


def test_tiny_random_is_a_few_million_parameter_llama_with_the_smollm2_tokenizer(tiny):
    model, tokenizer = tiny
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 < n_params < 10_000_000
    assert model.config.model_type == "llama"
    assert len(tokenizer) == 49152
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_tiny_random_is_saved_so_trainers_can_reload_it(tiny):
    model, _ = tiny
    assert (resolve_model("tiny-random") / "config.json").is_file()


def test_sampling_is_reproducible_with_a_seed(tiny):
    model, tokenizer = tiny
    conversations = [[{"role": "user", "content": f"write about {t}"}] for t in ("cats", "dogs", "tea")]
    a = generate_replies(model, tokenizer, conversations, max_new_tokens=6, seed=5, batch_size=2)
    b = generate_replies(model, tokenizer, conversations, max_new_tokens=6, seed=5, batch_size=2)
    c = generate_replies(model, tokenizer, conversations, max_new_tokens=6, seed=6, batch_size=2)
    assert a == b and a != c and len(a) == 3


def test_lora_config_is_returned_not_applied():
    model, _, peft_config = load_policy("tiny-random", lora={"r": 4, "lora_alpha": 8})
    assert peft_config.r == 4 and peft_config.task_type == "CAUSAL_LM"
    assert not hasattr(model, "peft_config")


@pytest.mark.parametrize(
    "name, message",
    [
        ("/definitely/not/here", "is not available offline"),
        ("someorg/some-model-not-cached", "is not available offline"),
        ("gpt-17", "Use policy.model=smollm2-135m-instruct"),
    ],
)
def test_unavailable_models_raise_one_clear_error(name, message):
    with pytest.raises(ModelNotAvailableError, match=message):
        check_model_available(name)


def test_a_folder_without_config_is_explained(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="has no config.json"):
        resolve_model(str(tmp_path))


def test_left_pad_uses_the_tokenizers_pad_on_the_left():
    from agents.policy import left_pad, load_policy

    _, tokenizer, _ = load_policy("tiny-random")
    padded = left_pad(tokenizer, [[5, 6, 7], [8]])
    pad = tokenizer.pad_token_id
    assert padded["input_ids"].tolist() == [[5, 6, 7], [pad, pad, 8]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
