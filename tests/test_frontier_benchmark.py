"""The frontier suite (RL4LMs' reward-KL trade-off): its arms set each method's own KL setting, its claims read
the published shape the right way round, its metrics come from eval.json, and the smoke runs through the CLI."""

import json
from pathlib import Path

import pytest

import agents
from experiments.benchmark_spec import arm_config_data, load_benchmark, scale_arms

REPO = Path(__file__).resolve().parents[1]
# Each method's KL coefficient in TRL 1.12, by the name its config class gives it.
KL_SETTING = {"ppo": "kl_coef", "grpo": "beta", "rloo": "beta", "online_dpo": "beta"}


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("frontier")


def test_every_arm_sets_its_methods_own_kl_setting_which_its_trl_config_accepts(bench, tmp_path):
    from experiments.config import ExperimentConfig

    swept = {}
    for arm in bench.arms:
        config = ExperimentConfig.model_validate(arm_config_data(bench, arm, "paper"))
        settings = dict(config.trainer)
        if config.method == "sft":
            assert not settings  # the supervised arm: no KL coefficient, its shipped defaults
            continue
        assert set(settings) == {KL_SETTING[config.method]}, arm.name
        # The method's own check builds its TRL config: an unknown name (e.g. beta for PPO) would fail here.
        agents.get_method(config.method).check_trainer(settings, tmp_path / arm.name, 0)
        swept.setdefault(config.method, []).append(settings[KL_SETTING[config.method]])
    assert set(swept) == set(KL_SETTING)
    for method, values in swept.items():  # near 0, the default, about ten times the default
        assert len(values) == 3 and min(values) <= 0.01 and max(values) >= 5 * sorted(values)[1], (method, values)


def test_the_smoke_runs_exactly_the_arms_the_claims_name_with_one_seed(bench):
    named = {term.arm for claim in bench.claims for term in claim.terms()}
    assert {arm.name for arm in scale_arms(bench, "smoke")} == named
    assert bench.scales["smoke"].seeds == [0] and not bench.factors
    for arm in scale_arms(bench, "smoke"):  # the scale's trainer budget reaches every arm (none overrides it)
        assert arm_config_data(bench, arm, "smoke")["trainer"]["max_steps"] == 1, arm.name


def _claims(bench, metrics_by_arm):
    from experiments.benchmark_report import aggregate, evaluate_claim

    trials = [{"arm": arm, "levels": {}, "seed": 0, "status": "done", "metrics": metrics}
              for arm, metrics in metrics_by_arm.items()]
    cells = aggregate(bench, trials, {})
    return {claim.id: evaluate_claim(claim, cells, {})["status"] for claim in bench.claims}


def _shape(bench, published: bool) -> dict:
    """Every arm's metrics as RL4LMs found them (published=True): RL gains more than SFT at a lower perplexity,
    reward and perplexity rise as beta falls; or the opposite of each (published=False)."""
    sign = 1 if published else -1
    out = {}
    for arm in bench.arms:
        if arm.name == "sft":
            out[arm.name] = {"improvement": 0.2, "reply_perplexity": 40.0}
            continue
        method, beta = arm.name.rsplit("_b", 1)
        beta = float(beta)
        out[arm.name] = {"improvement": 0.3 + sign * (0.2 - 0.1 * beta), "reply_perplexity": 35.0 + sign * (4 - 4 * beta)}
    out["ppo_b0.05"] = {"improvement": 0.2 + sign * 0.1, "reply_perplexity": 40.0 - sign * 5}
    for metrics in out.values():
        metrics |= {"mean_utility": metrics["improvement"] - 1.0, "kl_to_base": 1.0, "distinct_2": 0.5}
    return out


def test_the_claims_hold_on_the_published_shape_and_fail_on_its_opposite(bench):
    assert set(_claims(bench, _shape(bench, published=True)).values()) == {"held"}
    assert set(_claims(bench, _shape(bench, published=False)).values()) == {"not held"}


def _trial_folder(tmp_path, after: dict) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json").write_text(json.dumps({"before": {}, "after": after, "comparison": {"improvement": 0.25}}))
    return run


def test_the_frontier_metrics_are_the_trained_policys_text_metrics_from_eval_json(tmp_path):
    from experiments.benchmark_metrics import trial_metrics

    run = _trial_folder(tmp_path, {"mean_utility": -1.0, "kl_to_base": 3.5, "reply_perplexity": 41.0, "distinct_2": 0.75})
    assert trial_metrics(run, ["kl_to_base", "reply_perplexity", "distinct_2", "improvement"]) == {
        "kl_to_base": 3.5, "reply_perplexity": 41.0, "distinct_2": 0.75, "improvement": 0.25}


def test_a_trial_evaluated_without_the_text_metrics_is_one_clear_error(tmp_path):
    from experiments.benchmark_metrics import trial_metrics
    from experiments.config import ConfigError

    run = _trial_folder(tmp_path, {"mean_utility": -1.0})
    with pytest.raises(ConfigError, match=r"did not measure 'kl_to_base'.*evaluation.text_metrics: true"):
        trial_metrics(run, ["kl_to_base"])


@pytest.mark.slow
def test_frontier_smoke_through_the_cli(benchmark_smoke, bench):
    folder, data = benchmark_smoke("frontier")
    smoke_arms = [arm.name for arm in scale_arms(bench, "smoke")]
    assert [t["arm"] for t in data["trials"]] == smoke_arms and all(t["status"] == "done" for t in data["trials"])
    base_means = set()
    for trial in data["trials"]:
        report = json.loads((Path(trial["run_dir"]) / "eval.json").read_text())
        config = (Path(trial["run_dir"]) / "config.yaml").read_text()
        method = report["method"]
        if method in KL_SETTING:  # the arm's own KL setting reached the run
            value = next(a for a in bench.arms if a.name == trial["arm"]).set[f"trainer.{KL_SETTING[method]}"]
            assert f"{KL_SETTING[method]}: {value}" in config, (trial["arm"], config)
        for key in ("kl_to_base", "reply_perplexity", "distinct_2", "improvement", "mean_utility"):
            section = "comparison" if key == "improvement" else "after"
            assert trial["metrics"][key] == pytest.approx(report[section][key])
        base_means.add(report["before"]["mean_utility"])
    assert len(base_means) == 1  # one base evaluation shared by every arm
    assert {c["id"] for c in data["claims"]} == {c.id for c in bench.claims}
    for claim in data["claims"]:
        assert claim["status"] in ("held", "not held"), claim
    text = (folder / "benchmark.md").read_text()
    assert "### kl_to_base" in text and "### reply_perplexity" in text and "0.489 (zero-shot) -> 0.602" in text
    assert (folder / "plots" / "benchmark.png").stat().st_size > 0
