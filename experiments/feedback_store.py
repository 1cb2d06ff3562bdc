"""Human feedback in one SQLite file: people, tasks, replies, blind pairwise judgements, chats.

`attune serve` writes here; `attune feedback export/report` and DPO training read from here.
The file is the record of real people's judgements, so every write is one short transaction that
is committed before the call returns (a crash after `record_judgement` returns loses nothing),
and concurrent writers (threads of one server, or several processes) never lose a row.

Usage::

    from experiments.feedback_store import open_store

    with open_store("feedback.sqlite") as store:
        alice = store.add_person("Alice", {"brevity": 0.8})
        task = store.add_task("Summarise this email ...", scenario="attune/WritingAssistant-v0",
                              person_id=alice)
        a = store.add_reply(task, "runs/grpo_seed0", "Short answer.", {"max_new_tokens": 64})
        b = store.add_reply(task, "base:tiny-random", "A long answer ...", {"max_new_tokens": 64})
        store.record_judgement(task, alice, left_reply_id=b, right_reply_id=a, choice="right",
                               left_rating=2, right_rating=5, critique="too long")
        rows = store.judgements()  # dicts: judgement + task + person + both replies

Schema (all timestamps are UTC ISO-8601 strings, e.g. ``2026-11-03T10:15:02.123456+00:00``):

``people``
    id INTEGER PK, name TEXT (non-empty), preferences TEXT (JSON object, the person's own stated
    preferences; ``{}`` when none), created TEXT.
``tasks``
    id INTEGER PK, scenario TEXT (env/scenario id, or NULL for a request the person typed),
    scenario_task TEXT NULL (the scenario's task id, e.g. ``write-000``), prompt TEXT,
    person_id INTEGER NULL -> people.id, created TEXT.
``replies``
    id INTEGER PK, task_id INTEGER -> tasks.id, model TEXT (model id or run path),
    text TEXT, generation TEXT (JSON object of generation settings), created TEXT.
``judgements``
    id INTEGER PK, task_id -> tasks.id, person_id -> people.id,
    left_reply_id -> replies.id, right_reply_id -> replies.id (both replies of this task; the
    left/right ids are the order the person saw, which is the blind random order),
    left_model TEXT (which model was shown on the left, denormalised for quick audits),
    choice TEXT in ('left', 'right', 'tie'),
    left_rating / right_rating INTEGER NULL in 1..5, critique TEXT NULL, created TEXT.
``chat_turns``
    id INTEGER PK, conversation TEXT (an id the caller chooses, e.g. a uuid), person_id -> people.id
    (NULL allowed), model TEXT, role TEXT in ('user', 'assistant', 'system'), text TEXT, created TEXT.

Readers return plain dicts (column name -> value, JSON columns decoded), so callers do not
need sqlite3. `judgements()` joins each judgement with its task, its person and both replies and
adds ``chosen_reply_id`` / ``rejected_reply_id`` (None for a tie) for DPO pairs.

Why one module over 300 lines: the schema, its writes and its joined reads are one storage contract (the
module docstring is the schema's documentation); the length is mostly that documentation and validation.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

CHOICES = ("left", "right", "tie")
ROLES = ("user", "assistant", "system")

SCHEMA = """
CREATE TABLE IF NOT EXISTS people (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL CHECK (length(name) > 0),
    preferences TEXT NOT NULL DEFAULT '{}',
    created     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    id        INTEGER PRIMARY KEY,
    scenario  TEXT,
    scenario_task TEXT,
    prompt    TEXT NOT NULL CHECK (length(prompt) > 0),
    person_id INTEGER REFERENCES people(id),
    created   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS replies (
    id         INTEGER PRIMARY KEY,
    task_id    INTEGER NOT NULL REFERENCES tasks(id),
    model      TEXT NOT NULL,
    text       TEXT NOT NULL,
    generation TEXT NOT NULL DEFAULT '{}',
    created    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS judgements (
    id             INTEGER PRIMARY KEY,
    task_id        INTEGER NOT NULL REFERENCES tasks(id),
    person_id      INTEGER NOT NULL REFERENCES people(id),
    left_reply_id  INTEGER NOT NULL REFERENCES replies(id),
    right_reply_id INTEGER NOT NULL REFERENCES replies(id),
    left_model     TEXT NOT NULL,
    choice         TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie')),
    left_rating    INTEGER CHECK (left_rating BETWEEN 1 AND 5),
    right_rating   INTEGER CHECK (right_rating BETWEEN 1 AND 5),
    critique       TEXT,
    created        TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_turns (
    id           INTEGER PRIMARY KEY,
    conversation TEXT NOT NULL,
    person_id    INTEGER REFERENCES people(id),
    model        TEXT NOT NULL,
    role         TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system')),
    text         TEXT NOT NULL,
    created      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS judgements_person ON judgements(person_id);
CREATE INDEX IF NOT EXISTS replies_task ON replies(task_id);
CREATE INDEX IF NOT EXISTS chat_turns_conversation ON chat_turns(conversation, id);
"""


class FeedbackStoreError(ValueError):
    """A write that would store something wrong (unknown id, bad choice, rating out of range)."""


class UnknownIdError(FeedbackStoreError):
    """A write names a person, task or reply that does not exist."""


class AlreadyJudgedError(FeedbackStoreError):
    """``record_judgement(..., once=True)`` for a task that already has a judgement."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def open_store(path: str | Path) -> "FeedbackStore":
    """Open (creating if needed) the feedback database at `path`; ``":memory:"`` works for tests."""
    return FeedbackStore(path)


class FeedbackStore:
    """A thread-safe handle on the feedback database.

    One sqlite3 connection per thread (sqlite3 connections must not be shared across threads
    mid-transaction); each write is ``BEGIN IMMEDIATE ... COMMIT``, so writers queue on SQLite's
    lock (busy timeout 30 s) instead of failing or interleaving.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Writers of this process queue here first (cheaper than spinning on SQLite's lock);
        # other processes are kept out by BEGIN IMMEDIATE and the busy timeout.
        self._write_lock = threading.RLock()
        self._memory = self.path == ":memory:"
        if self._memory:
            # One connection for every thread, all access under the write lock: an in-memory
            # database exists only inside its connection.
            self._shared = sqlite3.connect(":memory:", isolation_level=None,
                                           check_same_thread=False)
            self._shared.row_factory = sqlite3.Row
            self._shared.execute("PRAGMA foreign_keys = ON")
            self._connections.append(self._shared)
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._write_lock:
            self._connection().executescript(SCHEMA)

    # -- connections ------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._memory:
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            # WAL + synchronous=FULL: a committed transaction survives power loss too.
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection (call once, when no thread is using the store)."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    def __enter__(self) -> "FeedbackStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writes -----------------------------------------------------------------------------

    def add_person(self, name: str, preferences: Mapping[str, Any] | None = None) -> int:
        """Add a person (a profile); returns their id. `preferences` is their own stated
        preferences, any JSON object (e.g. ``{"brevity": 0.8, "note": "no jargon"}``)."""
        name = (name or "").strip()
        if not name:
            raise FeedbackStoreError("person name is empty: give a name")
        prefs = _json_object(preferences, "preferences")
        with self._write() as conn:
            return self._insert(conn, "people", name=name, preferences=prefs)

    def add_task(self, prompt: str, scenario: str | None = None,
                 person_id: int | None = None, scenario_task: str | None = None) -> int:
        """Add a task (the user's request). `scenario` is the env/scenario id it came from, None
        for a request the person typed, and `scenario_task` the scenario's task id;
        `person_id` is who it was shown to, if anyone."""
        if not (prompt or "").strip():
            raise FeedbackStoreError("task prompt is empty: give the request text")
        with self._write() as conn:
            if person_id is not None:
                self._require(conn, "people", person_id)
            return self._insert(conn, "tasks", scenario=scenario, scenario_task=scenario_task, prompt=prompt,
                                person_id=person_id)

    def add_reply(self, task_id: int, model: str, text: str,
                  generation: Mapping[str, Any] | None = None) -> int:
        """Add one model's reply to a task. `model` names the policy (model id or run path);
        `generation` holds the settings used (max_new_tokens, temperature, seed, ...)."""
        if not model:
            raise FeedbackStoreError("reply model is empty: name the model id or run path")
        settings = _json_object(generation, "generation")
        with self._write() as conn:
            self._require(conn, "tasks", task_id)
            return self._insert(conn, "replies", task_id=task_id, model=model, text=text or "", generation=settings)

    def record_judgement(self, task_id: int, person_id: int, left_reply_id: int,
                         right_reply_id: int, choice: str, left_rating: int | None = None,
                         right_rating: int | None = None, critique: str | None = None,
                         once: bool = False) -> int:
        """Record one blind pairwise judgement; returns its id.

        `left_reply_id`/`right_reply_id` are the replies in the order the person saw them;
        `choice` is ``"left"``, ``"right"`` or ``"tie"``; ratings are optional integers 1-5;
        `critique` is optional free text. Both replies must belong to `task_id` and differ.
        With ``once=True`` a second judgement of the same task raises :class:`AlreadyJudgedError`
        (checked inside the write transaction, so two racing submissions store exactly one).
        """
        if choice not in CHOICES:
            raise FeedbackStoreError(f"choice {choice!r} is not one of {', '.join(CHOICES)}")
        for field, rating in (("left_rating", left_rating), ("right_rating", right_rating)):
            if rating is not None and (isinstance(rating, bool) or not isinstance(rating, int)
                                       or not 1 <= rating <= 5):
                raise FeedbackStoreError(f"{field} {rating!r} is not an integer from 1 to 5")
        if left_reply_id == right_reply_id:
            raise FeedbackStoreError("left and right reply are the same reply: judge two replies")
        critique = (critique or "").strip() or None
        with self._write() as conn:
            self._require(conn, "tasks", task_id)
            self._require(conn, "people", person_id)
            if once:
                done = conn.execute("SELECT id FROM judgements WHERE task_id = ?",
                                    (task_id,)).fetchone()
                if done is not None:
                    raise AlreadyJudgedError(
                        f"task {task_id} was already judged (judgement {done['id']})")
            models = {}
            for side, reply_id in (("left", left_reply_id), ("right", right_reply_id)):
                row = conn.execute("SELECT task_id, model FROM replies WHERE id = ?",
                                   (reply_id,)).fetchone()
                if row is None:
                    raise UnknownIdError(f"{side} reply {reply_id} does not exist")
                if row["task_id"] != task_id:
                    raise FeedbackStoreError(
                        f"{side} reply {reply_id} belongs to task {row['task_id']}, not {task_id}")
                models[side] = row["model"]
            return self._insert(conn, "judgements", task_id=task_id, person_id=person_id,
                                left_reply_id=left_reply_id, right_reply_id=right_reply_id,
                                left_model=models["left"], choice=choice, left_rating=left_rating,
                                right_rating=right_rating, critique=critique)

    def add_chat_turn(self, conversation: str, model: str, role: str, text: str,
                      person_id: int | None = None) -> int:
        """Append one turn of a multi-turn chat with one policy; returns the turn's id."""
        if role not in ROLES:
            raise FeedbackStoreError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if not conversation:
            raise FeedbackStoreError("conversation id is empty")
        with self._write() as conn:
            if person_id is not None:
                self._require(conn, "people", person_id)
            return self._insert(conn, "chat_turns", conversation=conversation, person_id=person_id,
                                model=model, role=role, text=text or "")

    @staticmethod
    def _insert(conn: sqlite3.Connection, table: str, **values: Any) -> int:
        """Insert one row (its ``created`` timestamp added) inside the caller's transaction; its id."""
        columns = ", ".join([*values, "created"])
        marks = ", ".join("?" * (len(values) + 1))
        cur = conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", (*values.values(), utc_now()))
        return int(cur.lastrowid)

    @staticmethod
    def _require(conn: sqlite3.Connection, table: str, row_id: int) -> None:
        if conn.execute(f"SELECT 1 FROM {table} WHERE id = ?", (row_id,)).fetchone() is None:
            singular = {"people": "person", "tasks": "task", "replies": "reply"}[table]
            raise UnknownIdError(f"{singular} {row_id} does not exist")

    # -- reads ------------------------------------------------------------------------------

    def _rows(self, sql: str, params: tuple = ()) -> list[dict]:
        if self._memory:
            with self._write_lock:
                rows = [dict(r) for r in self._connection().execute(sql, params).fetchall()]
        else:
            rows = [dict(r) for r in self._connection().execute(sql, params).fetchall()]
        for row in rows:
            for key in ("preferences", "generation", "left_generation", "right_generation"):
                if isinstance(row.get(key), str):
                    row[key] = json.loads(row[key])
        return rows

    def person(self, person_id: int) -> dict | None:
        rows = self._rows("SELECT * FROM people WHERE id = ?", (person_id,))
        return rows[0] if rows else None

    def people(self) -> list[dict]:
        return self._rows("SELECT * FROM people ORDER BY id")

    def task(self, task_id: int) -> dict | None:
        rows = self._rows("SELECT * FROM tasks WHERE id = ?", (task_id,))
        return rows[0] if rows else None

    def tasks(self) -> list[dict]:
        return self._rows("SELECT * FROM tasks ORDER BY id")

    def reply(self, reply_id: int) -> dict | None:
        rows = self._rows("SELECT * FROM replies WHERE id = ?", (reply_id,))
        return rows[0] if rows else None

    def replies(self, task_id: int | None = None) -> list[dict]:
        if task_id is None:
            return self._rows("SELECT * FROM replies ORDER BY id")
        return self._rows("SELECT * FROM replies WHERE task_id = ? ORDER BY id", (task_id,))

    def judgements(self, person_id: int | None = None) -> list[dict]:
        """Every judgement (or one person's), oldest first, joined with its task, person and
        both replies. Keys: the judgement's columns plus ``scenario, scenario_task, prompt, person_name,
        preferences, left_text, left_generation, right_model, right_text, right_generation,
        chosen_reply_id, rejected_reply_id, chosen_model, rejected_model`` (the last four are
        None for a tie)."""
        from envs.people import JUDGEMENTS_SELECT  # one query for the store and the training data

        sql = JUDGEMENTS_SELECT
        params: tuple = ()
        if person_id is not None:
            sql += " WHERE j.person_id = ?"
            params = (person_id,)
        rows = self._rows(sql + " ORDER BY j.id", params)
        for row in rows:
            if row["choice"] == "tie":
                row.update(chosen_reply_id=None, rejected_reply_id=None, chosen_model=None,
                           rejected_model=None)
            else:
                win, lose = ("left", "right") if row["choice"] == "left" else ("right", "left")
                row.update(chosen_reply_id=row[f"{win}_reply_id"],
                           rejected_reply_id=row[f"{lose}_reply_id"],
                           chosen_model=row[f"{win}_model"], rejected_model=row[f"{lose}_model"])
        return rows

    def chat(self, conversation: str) -> list[dict]:
        """The turns of one conversation, in order."""
        return self._rows("SELECT * FROM chat_turns WHERE conversation = ? ORDER BY id",
                          (conversation,))

    def chat_turns(self) -> list[dict]:
        return self._rows("SELECT * FROM chat_turns ORDER BY id")

    def counts(self) -> dict[str, int]:
        """Row count per table, e.g. for a report header or a test."""
        tables = ("people", "tasks", "replies", "judgements", "chat_turns")
        return {table: self._rows(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]
                for table in tables}


def _json_object(value: Mapping[str, Any] | None, field: str) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise FeedbackStoreError(f"{field} must be a JSON object (a dict), got {type(value).__name__}")
    try:
        return json.dumps(dict(value), sort_keys=True)
    except (TypeError, ValueError) as err:
        raise FeedbackStoreError(f"{field} is not JSON-serialisable: {err}") from None
