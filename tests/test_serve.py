"""The feedback page's API, driven with stand-in policies (no model): what it stores, what it refuses.

The browser test (a real `attune serve` with the tiny model, driven in Chromium) is tests/test_serve_browser.py.
"""

import json
import random
import time

import pytest
from fastapi.testclient import TestClient

from experiments.feedback_store import open_store
from experiments.serve import MAX_BODY_BYTES, MAX_TEXT, ScenarioTasks, create_app

INJECTION = '<img src=x onerror="document.body.dataset.pwned=1"><script>alert(1)</script>'


class StandInPolicy:
    """Replies with its label and the request: which policy wrote which reply is checkable."""

    def __init__(self, label, prefix=""):
        self.label = label
        self.prefix = prefix
        self.calls = []

    def reply(self, messages, *, seed, max_new_tokens, temperature):
        self.calls.append((messages, seed))
        return f"{self.prefix}{self.label} answers {messages[-1]['content']}"


@pytest.fixture
def served(tmp_path):
    store = open_store(tmp_path / "feedback.sqlite")
    policies = [StandInPolicy("runs/trained", prefix=INJECTION), StandInPolicy("base-model")]
    tasks = ScenarioTasks("attune/WritingAssistant-v1", {"write-000": "Write an email.", "write-001": "Write a poem."})
    app = create_app(store, policies, tasks, max_new_tokens=8, rng=random.Random(0),
                     allowed_hosts=["testserver", "127.0.0.1"])
    with TestClient(app) as client:
        yield client, store, policies
    store.close()


def wait(client, job_id, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {job['status']}")


def person(client, name="Ada"):
    response = client.post("/api/people", json={"name": name, "statement": "short please", "weights": {"brevity": 1}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def comparison(client, person_id, prompt="Write an email.", scenario_task="write-000"):
    response = client.post("/api/comparisons", json={"person_id": person_id, "prompt": prompt,
                                                     "scenario_task": scenario_task})
    assert response.status_code == 202, response.text
    job = wait(client, response.json()["job_id"])
    assert job["status"] == "done", job
    return job["result"]


def test_blind_comparison_is_stored_with_the_order_shown(served):
    client, store, policies = served
    ada = person(client)
    assert store.person(ada)["preferences"] == {"statement": "short please", "weights": {"brevity": 1}}
    lefts = []
    for _ in range(12):
        shown = comparison(client, ada)
        # Blind: the page gets texts and reply ids, never which policy wrote them.
        assert set(shown) == {"task_id", "left", "right"} and set(shown["left"]) == {"reply_id", "text"}
        left = store.reply(shown["left"]["reply_id"])
        lefts.append(left["model"])
        assert shown["left"]["text"] == left["text"]
        response = client.post("/api/judgements", json={
            "task_id": shown["task_id"], "person_id": ada, "left_reply_id": shown["left"]["reply_id"],
            "right_reply_id": shown["right"]["reply_id"], "choice": "left", "left_rating": 5, "critique": "ok"})
        assert response.status_code == 201, response.text
    assert set(lefts) == {"runs/trained", "base-model"}  # the order is random, both ways happen
    rows = store.judgements()
    assert [r["left_model"] for r in rows] == lefts  # the store records which policy was on the left
    assert [r["chosen_model"] for r in rows] == lefts
    assert rows[0]["scenario"] == "attune/WritingAssistant-v1" and rows[0]["scenario_task"] == "write-000"
    # Both policies answered the same request on the same sampling stream.
    (messages_a, seed_a), (messages_b, seed_b) = policies[0].calls[0], policies[1].calls[0]
    assert messages_a == messages_b == [{"role": "user", "content": "Write an email."}] and seed_a == seed_b
    assert rows[0]["left_generation"]["max_new_tokens"] == 8


def test_own_request_has_no_scenario(served):
    client, store, _ = served
    shown = comparison(client, person(client), prompt="Plan my week.", scenario_task=None)
    task = store.task(shown["task_id"])
    assert task["prompt"] == "Plan my week." and task["scenario"] is None and task["scenario_task"] is None


def test_one_model_against_itself_samples_twice(tmp_path):
    with open_store(tmp_path / "f.sqlite") as store:
        model = StandInPolicy("tiny-random")
        app = create_app(store, [model, model], ScenarioTasks("env", {"t": "Do it."}), rng=random.Random(1))
        with TestClient(app) as client:
            assert client.get("/api/info").json()["same_model"] is True
            comparison(client, person(client), prompt="Do it.", scenario_task=None)
        assert model.calls[0][1] != model.calls[1][1]


def counts_unchanged(store, before):
    assert store.counts() == before


@pytest.mark.parametrize("body, status, message", [
    ({"choice": "both"}, 422, "choice: Input should be 'left', 'right' or 'tie'"),
    ({"left_rating": 6}, 422, "left_rating: Input should be less than or equal to 5"),
    ({"right_rating": 0}, 422, "right_rating: Input should be greater than or equal to 1"),
    ({"critique": "x" * (MAX_TEXT + 1)}, 422, f"critique: String should have at most {MAX_TEXT} characters"),
    ({"task_id": 999}, 404, "task 999 does not exist"),
    ({"person_id": 999}, 404, "person 999 does not exist"),
    ({"left_reply_id": 999}, 404, "left reply 999 does not exist"),
    ({"task_id": 2**60}, 422, "task_id: Input should be less than or equal to"),
    ({"extra": 1}, 422, "extra: Extra inputs are not permitted"),
    ({"same_reply": True}, 422, "same reply"),
])
def test_bad_judgements_store_nothing(served, body, status, message):
    client, store, _ = served
    ada = person(client)
    shown = comparison(client, ada)
    good = {"task_id": shown["task_id"], "person_id": ada, "left_reply_id": shown["left"]["reply_id"],
            "right_reply_id": shown["right"]["reply_id"], "choice": "tie"}
    if body.pop("same_reply", False):
        body["right_reply_id"] = good["left_reply_id"]
    before = store.counts()
    response = client.post("/api/judgements", json={**good, **body})
    assert response.status_code == status and message in response.json()["detail"], response.text
    counts_unchanged(store, before)


def test_second_submission_and_someone_elses_task_are_refused(served):
    client, store, _ = served
    ada, bo = person(client, "Ada"), person(client, "Bo")
    shown = comparison(client, ada)
    body = {"task_id": shown["task_id"], "person_id": ada, "left_reply_id": shown["left"]["reply_id"],
            "right_reply_id": shown["right"]["reply_id"], "choice": "right"}
    assert client.post("/api/judgements", json={**body, "person_id": bo}).status_code == 409
    assert client.post("/api/judgements", json=body).status_code == 201
    again = client.post("/api/judgements", json={**body, "choice": "left"})
    assert again.status_code == 409 and "already judged" in again.json()["detail"]
    assert [r["choice"] for r in store.judgements()] == ["right"]


@pytest.mark.parametrize("path, body, status, message", [
    ("/api/people", {"name": ""}, 422, "name: String should have at least 1 character"),
    ("/api/people", {"name": "   "}, 422, "name: String should have at least 1 character"),
    ("/api/people", {"name": "A" * 101}, 422, "name: String should have at most 100 characters"),
    ("/api/people", {"name": "Ada", "weights": {"charm": 1}}, 422, "unknown dimension(s) ['charm']"),
    ("/api/people", {"name": "Ada", "weights": {"brevity": 5}}, 422, "weights.brevity"),
    ("/api/people", None, 422, "body: not valid JSON"),
    ("/api/comparisons", {"person_id": 1, "prompt": ""}, 422, "prompt: String should have at least 1 character"),
    ("/api/comparisons", {"person_id": 1, "prompt": "x" * (MAX_TEXT + 1)}, 422, "prompt: String should have at most"),
    ("/api/comparisons", {"person_id": 999, "prompt": "hi"}, 404, "person 999 does not exist"),
    ("/api/comparisons", {"person_id": 1, "prompt": "hi", "scenario_task": "nope"}, 404, "scenario task 'nope'"),
    ("/api/chat", {"person_id": 1, "policy": 5, "text": "hi"}, 404, "policy 5 does not exist"),
    ("/api/chat", {"person_id": 1, "policy": 0, "text": ""}, 422, "text: String should have at least 1 character"),
    ("/api/chat", {"person_id": 1, "policy": 0, "text": "hi", "conversation": "nope"}, 404, "conversation 'nope'"),
])
def test_bad_requests_get_a_clear_error_and_store_nothing(served, path, body, status, message):
    client, store, _ = served
    person(client)
    before = store.counts()
    if body is None:
        response = client.post(path, content=b"{not json", headers={"content-type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == status and message in response.json()["detail"], response.text
    counts_unchanged(store, before)


def test_ten_megabytes_are_refused_before_parsing(served):
    client, store, _ = served
    before = store.counts()
    huge = json.dumps({"name": "A", "statement": "x" * 10_000_000})
    response = client.post("/api/people", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert f"the limit is {MAX_BODY_BYTES} bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the body streams in, and is cut off all the same
        for _ in range(200):
            yield b"x" * 50_000

    streamed = client.post("/api/people", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    counts_unchanged(store, before)


def test_unknown_job_and_host(served):
    client, _, _ = served
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.get("/api/info", headers={"host": "attacker.example"}).status_code == 400


def test_page_and_headers(served):
    client, _, _ = served
    page = client.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = client.get("/static/app.js").text
    assert "innerHTML" not in script and "textContent" in script  # texts are never parsed as HTML
    assert "http://" not in page.text + script and "https://" not in page.text + script  # no CDN


def test_chat_keeps_the_conversation(served):
    client, store, policies = served
    ada = person(client)
    first = client.post("/api/chat", json={"person_id": ada, "policy": 1, "text": "Hello"}).json()
    assert wait(client, first["job_id"])["result"]["text"] == "base-model answers Hello"
    second = client.post("/api/chat", json={"person_id": ada, "policy": 1, "text": "More",
                                            "conversation": first["conversation"]}).json()
    assert wait(client, second["job_id"])["status"] == "done"
    assert policies[1].calls[-1][0] == [
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "base-model answers Hello"},
        {"role": "user", "content": "More"}]
    turns = store.chat(first["conversation"])
    assert [(t["role"], t["person_id"], t["model"]) for t in turns] == [
        ("user", ada, "base-model"), ("assistant", ada, "base-model")] * 2
    # The same conversation with the other policy, or by someone else, is refused.
    other = client.post("/api/chat", json={"person_id": ada, "policy": 0, "text": "x",
                                           "conversation": first["conversation"]})
    assert other.status_code == 409
    assert len(store.chat(first["conversation"])) == 4


def test_a_message_while_the_policy_is_answering_is_refused(tmp_path):
    import threading

    release = threading.Event()

    class SlowPolicy(StandInPolicy):
        def reply(self, messages, **kwargs):
            release.wait(10)
            return super().reply(messages, **kwargs)

    with open_store(tmp_path / "f.sqlite") as store:
        slow = SlowPolicy("slow")
        app = create_app(store, [slow, StandInPolicy("other")], ScenarioTasks("env", {"t": "Do it."}))
        with TestClient(app) as client:
            ada = person(client)
            first = client.post("/api/chat", json={"person_id": ada, "policy": 0, "text": "Hi"}).json()
            assert client.get(f"/api/jobs/{first['job_id']}").json()["status"] in ("queued", "running")
            busy = client.post("/api/chat", json={"person_id": ada, "policy": 0, "text": "Again",
                                                  "conversation": first["conversation"]})
            assert busy.status_code == 409 and "still answering" in busy.json()["detail"]
            release.set()
            assert wait(client, first["job_id"])["status"] == "done"
        assert [t["text"] for t in store.chat(first["conversation"])] == ["Hi", "slow answers Hi"]


def test_cli_errors_are_one_line(attune_cli, tmp_path):
    import socket
    import subprocess

    def serve(*args):
        return subprocess.run([attune_cli, "serve", *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)

    missing = serve("runs/nope")
    assert missing.returncode == 2
    assert missing.stderr.strip() == ("serve error: run folder runs/nope does not exist: give a folder written by "
                                      "`attune run`, e.g. runs/<name>/")
    (tmp_path / "not-a-run").mkdir()
    assert "is not a run folder (no config.yaml)" in serve("not-a-run").stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = serve("--model", "tiny-random", "--port", str(taken.getsockname()[1]))
    assert busy.returncode == 2 and "pass another --port" in busy.stderr and "Traceback" not in busy.stderr
    assert not (tmp_path / "feedback.sqlite").exists()  # nothing written before the checks pass


def test_readme_starts_the_demo_run():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith(".venv/bin/attune serve "))
    # `make demo` runs experiments/configs/quickstart.yaml, whose run folders are runs/quickstart__<env>__...
    assert "runs/quickstart__*" in command and "--db feedback.sqlite" in command
    assert "![" in readme and "(docs/serve.png)" in readme
    assert (Path(__file__).resolve().parents[1] / "docs" / "serve.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [[], ["policy.lora.r=4"]], ids=["full", "lora"])
def test_real_runs_load_and_reply(attune_cli, tmp_path, overrides):
    """The runs `attune run` writes (full fine-tuning and LoRA) serve against their base model."""
    import subprocess
    from pathlib import Path

    from experiments.serve import load_policies

    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([attune_cli, "run", str(repo / "experiments/configs/tiny.yaml"),
                           f"tracking.runs_dir={tmp_path}", "evaluation.enabled=false", *overrides],
                          capture_output=True, text=True, timeout=600, cwd=repo)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = tmp_path.iterdir()
    policies, env_id = load_policies([run])
    assert [p.label for p in policies] == [str(run), "tiny-random"] and env_id == "attune/WritingAssistant-v1"
    if overrides:
        assert type(policies[0].model).__name__.startswith("Peft")
    messages = [{"role": "user", "content": "Write a short note."}]
    replies = [p.reply(messages, seed=0, max_new_tokens=6, temperature=0.0) for p in policies]
    assert all(isinstance(r, str) for r in replies)
