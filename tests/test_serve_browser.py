"""`attune serve` tested as a person uses it: the real command with the tiny model, driven in headless Chromium.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install chromium`); Playwright drives it through
``executable_path``, no `playwright install`. Set ATTUNE_SCREENSHOT=1 to save the page to docs/serve.png, or
make the README's screenshot with a real model (about a minute on a CPU):

    PYTHONPATH=. .venv/bin/python tests/test_serve_browser.py --model smollm2-135m-instruct
"""

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from experiments.feedback_store import open_store

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("ATTUNE_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOT = REPO / "docs" / "serve.png"
INJECTED_NAME = '<img src=x onerror="document.body.dataset.pwned=1">Eve'
INJECTED_CRITIQUE = "<script>document.body.dataset.pwned=1</script> shorter, please"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"Chromium not found at {CHROMIUM}: install it (`apt-get install chromium`) to run the browser test",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_run(runs_dir: Path) -> Path:
    """A run folder as `attune run experiments/configs/tiny.yaml` leaves it, minus the training: its config and
    a model in checkpoints/final (the tiny model's weights; serving does not care whether they were trained)."""
    from agents.policy import resolve_model
    from experiments.config_files import dump_config, load_config

    run = runs_dir / "tiny__WritingAssistant-v1__s0__test"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(load_config(REPO / "experiments/configs/tiny.yaml")))
    shutil.copytree(resolve_model("tiny-random"), run / "checkpoints" / "final")
    return run


def start_server(attune: str, args: list[str], cwd: Path) -> tuple[subprocess.Popen, str]:
    """Start `attune serve ARGS` on a free loopback port; returns the process and its URL once it answers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([attune, "serve", *args, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while True:
        try:
            urllib.request.urlopen(url + "/api/info", timeout=5)
            return process, url
        except OSError:  # refused until the models are loaded (URLError, timeouts and resets are OSErrors)
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise RuntimeError(f"attune serve did not start:\n{process.stdout.read()}")
            time.sleep(0.2)


def stop_server(process: subprocess.Popen) -> str:
    process.terminate()
    try:
        out, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


@pytest.fixture
def server(attune_cli, tmp_path):
    run = tiny_run(tmp_path / "runs")
    db = tmp_path / "feedback.sqlite"
    process, url = start_server(attune_cli, [str(run), "--db", str(db), "--max-new-tokens", "12"], tmp_path)
    yield url, db, run
    out = stop_server(process)
    assert "Traceback" not in out, out


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_person_judges_and_chats_in_the_browser(server):
    from playwright.sync_api import expect, sync_playwright

    url, db, run = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page_errors = []
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.goto(url)
            expect(page.locator("body[data-ready=true]")).to_have_count(1)

            # An empty name is refused with a clear message, and nothing is stored.
            page.click("#create-person")
            expect(page.locator("#error")).to_contain_text("name: String should have at least 1 character")

            page.fill("#person-name", INJECTED_NAME)
            page.fill("#person-statement", "short answers, no jargon")
            page.select_option("#weight-brevity", "1")
            page.click("#create-person")
            expect(page.locator("#who")).to_contain_text(INJECTED_NAME)  # shown as text, not as an image
            expect(page.locator("#prompt")).not_to_have_value("")
            expect(page.locator("#error")).to_be_hidden()

            choices = []
            for choice, rating in (("#choice-right", "4"), ("#choice-tie", None)):
                page.click("#compare")
                expect(page.locator("#compare-section")).to_be_visible(timeout=60_000)
                expect(page.locator("#progress")).to_be_hidden()
                page.check(choice)
                if rating:
                    page.select_option("#right-rating", rating)
                    page.fill("#critique", INJECTED_CRITIQUE)
                    if os.environ.get("ATTUNE_SCREENSHOT") == "1":
                        page.screenshot(path=str(SCREENSHOT), full_page=True)
                page.click("#submit-judgement")
                expect(page.locator("#saved")).to_contain_text(f"Saved judgement #{len(choices) + 1}")
                choices.append(choice.removeprefix("#choice-"))

            # Chat, two turns, with the first policy.
            for text in ("Hello there", "Tell me more"):
                page.fill("#chat-text", text)
                page.click("#chat-send")
                expect(page.locator(".turn.assistant")).to_have_count(1 if text == "Hello there" else 2,
                                                                      timeout=60_000)
            assert page.locator("#who img").count() == 0 and page.locator("script:not([src])").count() == 0
            assert page.evaluate("document.body.dataset.pwned") is None
            assert page_errors == []
        finally:
            browser.close()

    with open_store(db) as store:
        (eve,) = store.people()
        assert eve["name"] == INJECTED_NAME  # stored verbatim; escaped only where shown
        assert eve["preferences"] == {"statement": "short answers, no jargon", "weights": {"brevity": 1}}
        rows = store.judgements()
        assert [r["choice"] for r in rows] == choices
        assert rows[0]["right_rating"] == 4 and rows[0]["critique"] == INJECTED_CRITIQUE
        for row in rows:  # one reply from the run's trained model, one from its base model, in either order
            assert {row["left_model"], row["right_model"]} == {str(run), "tiny-random"}
            assert row["person_id"] == eve["id"] and row["scenario"] == "attune/WritingAssistant-v1"
        turns = store.chat_turns()
        assert [t["role"] for t in turns] == ["user", "assistant"] * 2
        assert turns[0]["text"] == "Hello there" and turns[2]["text"] == "Tell me more"
        assert {t["model"] for t in turns} == {str(run)}  # "Policy 1" is the run's trained model
        assert len({t["conversation"] for t in turns}) == 1

        # Concurrent submissions of one comparison: exactly one is stored, the others are told why.
        task = store.add_task("Say hi.", person_id=eve["id"])
        a = store.add_reply(task, "x", "hi")
        b = store.add_reply(task, "y", "hello")
    body = {"task_id": task, "person_id": eve["id"], "left_reply_id": a, "right_reply_id": b, "choice": "left"}
    statuses = []
    threads = [threading.Thread(target=lambda: statuses.append(post(url + "/api/judgements", body)[0]))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [409] * 5
    with open_store(db) as store:
        assert len(store.judgements()) == 3


def save_screenshot(model: str, out: Path = SCREENSHOT) -> None:
    """The page mid-judgement with ``model`` against itself (a real model reads better than tiny-random)."""
    import sys
    import tempfile

    from playwright.sync_api import expect, sync_playwright

    attune = str(Path(sys.executable).with_name("attune"))
    with tempfile.TemporaryDirectory() as folder:
        process, url = start_server(attune, ["--model", model, "--db", f"{folder}/feedback.sqlite",
                                             "--max-new-tokens", "60"], Path(folder))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                page.goto(url)
                expect(page.locator("body[data-ready=true]")).to_have_count(1)
                page.fill("#person-name", "Ada")
                page.fill("#person-statement", "short answers, no jargon, one example")
                page.select_option("#weight-brevity", "1")
                page.select_option("#weight-examples", "1")
                page.click("#create-person")
                page.click("#compare")
                expect(page.locator("#compare-section")).to_be_visible(timeout=600_000)
                page.check("#choice-left")
                page.select_option("#left-rating", "4")
                page.select_option("#right-rating", "2")
                page.fill("#critique", "B is too long; A could give one concrete example.")
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        finally:
            stop_server(process)
    print(f"saved {out}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="save docs/serve.png: the feedback page with a real model")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    save_screenshot(parser.parse_args().model)
