"""The README's examples run as written."""

import re
from pathlib import Path

import envs.scenarios

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks_under(heading: str) -> list[str]:
    section = README.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_starts_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1)
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make demo", "make test"]


def test_write_your_own_environment_example_runs(capsys):
    (code,) = python_blocks_under("Write your own user or environment")
    import gymnasium

    try:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    finally:
        envs.scenarios.SCENARIOS.pop("recipes", None)
        gymnasium.registry.pop("my/RecipeAssistant-v0", None)
    out = capsys.readouterr().out
    assert out.startswith("User: ")
    assert "recipe" in out.lower()
    assert "brevity" in out and ("quick_cooks" in out or "food_lovers" in out)
