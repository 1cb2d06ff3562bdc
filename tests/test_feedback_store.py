"""The feedback store: what goes in comes out, bad writes store nothing, no lost rows."""

import multiprocessing
import sqlite3
import threading

import pytest

from experiments.feedback_store import AlreadyJudgedError, FeedbackStoreError, UnknownIdError, open_store


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "feedback.sqlite") as s:
        yield s


def _pair(store, person=None):
    task = store.add_task("Write a birthday note.", scenario="attune/WritingAssistant-v0",
                          person_id=person, scenario_task="write-007")
    a = store.add_reply(task, "runs/trained", "Happy birthday!", {"max_new_tokens": 16})
    b = store.add_reply(task, "base:tiny-random", "Many happy returns of the day.", {})
    return task, a, b


def test_wal_foreign_keys_and_utc(store, tmp_path):
    conn = sqlite3.connect(tmp_path / "feedback.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    person = store.add_person("Ada", {"brevity": 0.9, "note": "no jargon"})
    row = store.person(person)
    assert row["name"] == "Ada" and row["preferences"] == {"brevity": 0.9, "note": "no jargon"}
    assert row["created"].endswith("+00:00")
    # Foreign keys are on in the store's own connections: a dangling id is refused by SQLite too.
    raw = store._connection()
    with pytest.raises(sqlite3.IntegrityError):
        raw.execute("INSERT INTO replies (task_id, model, text, created) VALUES (999, 'm', 't', 'x')")


def test_judgement_round_trip_with_chosen_and_rejected(store):
    ada = store.add_person("Ada")
    task, trained, base = _pair(store, ada)
    # Shown base on the left, trained on the right; Ada picks the right one.
    jid = store.record_judgement(task, ada, left_reply_id=base, right_reply_id=trained,
                                 choice="right", left_rating=2, right_rating=5,
                                 critique="  the short one  ")
    tie = store.record_judgement(task, ada, trained, base, "tie")
    rows = store.judgements()
    assert [r["id"] for r in rows] == [jid, tie]
    first = rows[0]
    assert first["left_model"] == "base:tiny-random" and first["right_model"] == "runs/trained"
    assert first["chosen_reply_id"] == trained and first["rejected_reply_id"] == base
    assert first["chosen_model"] == "runs/trained"
    assert first["left_rating"] == 2 and first["right_rating"] == 5
    assert first["critique"] == "the short one"
    assert first["prompt"] == "Write a birthday note." and first["person_name"] == "Ada"
    assert first["scenario"] == "attune/WritingAssistant-v0" and first["scenario_task"] == "write-007"
    assert first["right_text"] == "Happy birthday!" and first["left_generation"] == {}
    assert first["right_generation"] == {"max_new_tokens": 16}
    assert rows[1]["chosen_reply_id"] is None and rows[1]["critique"] is None
    assert store.judgements(person_id=ada + 1) == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(choice="both"), "choice"),
    (dict(left_rating=6), "left_rating"),
    (dict(right_rating=0), "right_rating"),
    (dict(left_rating=True), "left_rating"),
    (dict(left_reply_id=999), "reply 999 does not exist"),
    (dict(person_id=999), "person 999 does not exist"),
    (dict(task_id=999), "task 999 does not exist"),
    (dict(right_reply_id="same"), "same reply"),
    (dict(right_reply_id="other_task"), "belongs to task"),
])
def test_bad_judgement_stores_nothing(store, kwargs, message):
    ada = store.add_person("Ada")
    task, a, b = _pair(store, ada)
    _, other, _ = _pair(store, ada)
    args = dict(task_id=task, person_id=ada, left_reply_id=a, right_reply_id=b, choice="left")
    args.update(kwargs)
    if args["right_reply_id"] == "same":
        args["right_reply_id"] = a
    if args["right_reply_id"] == "other_task":
        args["right_reply_id"] = other
    with pytest.raises(FeedbackStoreError, match=message):
        store.record_judgement(**args)
    assert store.counts()["judgements"] == 0


def test_bad_people_tasks_replies_and_turns(store):
    with pytest.raises(FeedbackStoreError, match="name"):
        store.add_person("   ")
    with pytest.raises(FeedbackStoreError, match="preferences"):
        store.add_person("Bo", ["brevity"])
    with pytest.raises(FeedbackStoreError, match="prompt"):
        store.add_task("")
    with pytest.raises(UnknownIdError, match="person 5"):
        store.add_task("hi", person_id=5)
    with pytest.raises(FeedbackStoreError, match="task 5"):
        store.add_reply(5, "m", "t")
    with pytest.raises(FeedbackStoreError, match="role"):
        store.add_chat_turn("c1", "m", "robot", "hi")
    assert store.counts() == dict(people=0, tasks=0, replies=0, judgements=0, chat_turns=0)


def test_once_stores_one_judgement_per_task_under_racing_threads(store):
    ada = store.add_person("Ada")
    task, a, b = _pair(store, ada)
    outcomes = []

    def submit():
        try:
            outcomes.append(store.record_judgement(task, ada, a, b, "left", once=True))
        except AlreadyJudgedError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(o, int) for o in outcomes) == 1
    assert sum("already judged" in str(o) for o in outcomes) == 5
    assert store.counts()["judgements"] == 1
    assert store.task(task)["scenario_task"] == "write-007"


def test_chat_turns_in_order(store):
    ada = store.add_person("Ada")
    store.add_chat_turn("c1", "runs/trained", "user", "Hello", person_id=ada)
    store.add_chat_turn("c2", "runs/trained", "user", "Other conversation")
    store.add_chat_turn("c1", "runs/trained", "assistant", "Hi Ada")
    turns = store.chat("c1")
    assert [(t["role"], t["text"]) for t in turns] == [("user", "Hello"), ("assistant", "Hi Ada")]
    assert turns[0]["person_id"] == ada and turns[1]["person_id"] is None


def test_text_is_stored_verbatim(store):
    ada = store.add_person("<script>alert(1)</script>", {"x": "'; DROP TABLE people; --"})
    assert store.person(ada)["name"] == "<script>alert(1)</script>"
    assert store.person(ada)["preferences"] == {"x": "'; DROP TABLE people; --"}
    assert store.counts()["people"] == 1


def test_concurrent_writers_lose_no_row(tmp_path):
    path = tmp_path / "feedback.sqlite"
    store = open_store(path)
    ada = store.add_person("Ada")
    task, a, b = _pair(store, ada)
    per_thread, threads = 25, 8
    errors = []

    def judge(n):
        try:
            for i in range(per_thread):
                store.record_judgement(task, ada, a, b, ("left", "right", "tie")[i % 3],
                                       critique=f"thread {n} judgement {i}")
                store.add_chat_turn(f"conv-{n}", "m", "user", str(i))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    workers = [threading.Thread(target=judge, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    store.close()
    # Reopened from disk: every row is there, each exactly once.
    with open_store(path) as reopened:
        critiques = [r["critique"] for r in reopened.judgements()]
        assert len(critiques) == len(set(critiques)) == per_thread * threads
        assert [t["text"] for t in reopened.chat("conv-3")] == [str(i) for i in range(per_thread)]


def _write_from_process(path, n):
    with open_store(path) as store:
        for i in range(10):
            store.add_chat_turn("shared", "m", "user", f"{n}-{i}")


def test_concurrent_processes_lose_no_row(tmp_path):
    path = tmp_path / "feedback.sqlite"
    open_store(path).close()
    # fork: the child needs nothing but this module, and spawn would re-import the test stack (~3 s).
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_from_process, args=(path, n)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    with open_store(path) as store:
        assert sorted(t["text"] for t in store.chat("shared")) == sorted(
            f"{n}-{i}" for n in range(2) for i in range(10))


def test_memory_store_is_shared_across_threads():
    with open_store(":memory:") as store:
        ids = []
        threads = [threading.Thread(target=lambda: ids.append(store.add_person("P")))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(ids) == [1, 2, 3, 4] and store.counts()["people"] == 4
