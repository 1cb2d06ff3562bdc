"""``attune serve``: a local web page where real people judge and chat with policies.

A person picks or creates a profile (a name and, optionally, their stated preferences), gets a task
from the scenario (or types their own request), sees two replies side by side from two policies in
random order, without knowing which is which, and chooses one or a tie, optionally rating each 1-5
and writing a critique. They can also chat, several turns, with one policy. Everything goes into a
SQLite file through :mod:`experiments.feedback_store`; a judgement is committed before its request
returns, so the next page never loads ahead of the row.

Policies: with run folders, each run's trained model (``checkpoints/final``); one run is compared
against its own base model (``policy.model`` of its config); with no run, ``--model`` against itself
(two samples). Tasks come from the first run's scenario (or ``--env``).

Generation is slow next to a request (seconds on a CPU), so it runs on one worker thread: the page
posts a request, gets a job id back at once (202) and polls ``/api/jobs/<id>``, showing the job's
progress text with a spinner meanwhile. Bodies are validated by pydantic models with length limits
(422 naming the field); bodies over :data:`MAX_BODY_BYTES` are refused before they are read (413);
ids that do not exist answer 404; a second judgement of the same comparison answers 409; nothing is
stored on any error. The page shows every text with ``textContent`` (never as HTML) and the
Content-Security-Policy allows only the page's own scripts.

Why one module over 300 lines: the page's API (request models, routes, the generation worker and the body-size
guard) is one small server whose safety rules (blind order, escaping, what is stored on error) are checked
together; the page itself is in experiments/web/.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from experiments.feedback_store import (
    AlreadyJudgedError,
    FeedbackStore,
    FeedbackStoreError,
    UnknownIdError,
)

WEB_DIR = Path(__file__).resolve().parent / "web"
DEFAULT_ENV = "attune/WritingAssistant-v1"
MAX_BODY_BYTES = 64 * 1024
"""Request bodies above this are refused with 413 before they are parsed: room for the longest text
(:data:`MAX_TEXT` characters, up to 4 bytes each in UTF-8) with the rest of a request."""
MAX_NAME = 100
MAX_TEXT = 4000
MAX_CHAT_TURNS = 8
"""Past turns a chat reply sees: small models have short contexts."""
KEEP_JOBS = 500


class ServeError(ValueError):
    """Something the user can fix in the ``attune serve`` command line (a bad run folder, a busy port)."""


# -- policies ---------------------------------------------------------------------------------


@dataclass
class ServedPolicy:
    """One policy the page can ask for replies. ``label`` is what the store records as the reply's
    model: the run folder for a trained model, the model id for a base model."""

    label: str
    model: Any
    tokenizer: Any
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reply(self, messages: list[dict[str, str]], *, seed: int, max_new_tokens: int,
              temperature: float) -> str:
        from agents.policy import generate_replies

        with self.lock:
            return generate_replies(self.model, self.tokenizer, [messages], seed=seed,
                                    max_new_tokens=max_new_tokens, temperature=temperature,
                                    batch_size=1)[0]


def load_run_policy(run_dir: Path) -> tuple[ServedPolicy, str, str]:
    """The trained policy a run saved, its base model id and its env id."""
    import yaml

    from experiments.config import ExperimentConfig

    if not run_dir.is_dir():
        raise ServeError(f"run folder {run_dir} does not exist: give a folder written by `attune run`, "
                         "e.g. runs/<name>/")
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise ServeError(f"{run_dir} is not a run folder (no config.yaml): give a folder written by `attune run`")
    try:
        config = ExperimentConfig.model_validate(yaml.safe_load(config_file.read_text()))
    except Exception as exc:
        raise ServeError(f"{config_file} does not load ({' '.join(str(exc).split())[:300]}): "
                         "is the run from another attune version?") from None
    final = run_dir / "checkpoints" / "final"
    base = config.policy.model
    if (final / "adapter_config.json").is_file():
        from peft import PeftModel

        from agents.policy import load_policy

        model, tokenizer, _ = load_policy(base)
        model = PeftModel.from_pretrained(model, final)
    elif (final / "config.json").is_file():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(final)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(final, dtype="float32")
    else:
        raise ServeError(f"run {run_dir} has no trained model in checkpoints/final (method {config.method} saves "
                         "none, or the run did not finish): serve a finished run of a training method")
    model.eval()
    return ServedPolicy(str(run_dir), model, tokenizer), base, config.env.id


def load_base_policy(name: str) -> ServedPolicy:
    from agents.policy import load_policy

    model, tokenizer, _ = load_policy(name)
    model.eval()
    return ServedPolicy(name, model, tokenizer)


def load_policies(runs: list[Path], model: str | None = None) -> tuple[list[ServedPolicy], str | None]:
    """The policies to compare and the env id of the first run (None without runs).

    Two or more runs: their trained models. One run: its trained model and its base model (or
    ``model`` when given). No run: ``model`` (default: the embedded SmolLM2) against itself.
    """
    from agents.policy import EMBEDDED_MODEL

    if not runs:
        policy = load_base_policy(model or EMBEDDED_MODEL)
        return [policy, policy], None
    loaded = [load_run_policy(Path(run)) for run in runs]
    policies = [policy for policy, _, _ in loaded]
    env_id = loaded[0][2]
    if len(policies) == 1:
        policies.append(load_base_policy(model or loaded[0][1]))
    return policies, env_id


# -- scenario tasks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioTasks:
    """The tasks a person can be given: the scenario's, phrased neutrally (no user's style)."""

    env_id: str
    prompts: dict[str, str]

    @classmethod
    def of(cls, env_id: str) -> "ScenarioTasks":
        import envs
        from envs.scenarios import get_scenario
        from envs.style_text import phrase_request

        try:
            scenario = get_scenario(envs.scenario_of(env_id))
        except Exception:
            raise ServeError(f"--env {env_id!r} is not a conversation env; use one of: "
                             f"{', '.join(envs.registered_env_ids('text'))}") from None
        return cls(env_id, {t.task_id: phrase_request(t.instruction, {}) for t in scenario.tasks})


# -- background jobs --------------------------------------------------------------------------


class Jobs:
    """Generation jobs run one at a time on a worker thread; the page polls their state."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attune-generate")
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def submit(self, work: Callable[[Callable[[str], None]], dict], waiting: str) -> str:
        """Queue ``work(progress)``; its dict result becomes the job's ``result``."""
        job_id = uuid.uuid4().hex
        job = {"id": job_id, "status": "queued", "progress": waiting, "started": time.time()}
        with self._lock:
            self._jobs[job_id] = job
            finished = [k for k, j in self._jobs.items() if j["status"] in ("done", "failed")]
            for old in finished[: max(0, len(self._jobs) - KEEP_JOBS)]:
                del self._jobs[old]

        def progress(text: str) -> None:
            job["progress"] = text

        def run() -> None:
            job["status"] = "running"
            try:
                job["result"] = work(progress)
                job["status"] = "done"
                job["progress"] = "done"
            except Exception as exc:  # shown on the page; the server keeps serving
                job["error"] = f"generation failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                job["status"] = "failed"

        self._executor.submit(run)
        return job_id

    def get(self, job_id: str) -> dict | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else {k: v for k, v in job.items() if k != "started"} | {
                "seconds": round(time.time() - job["started"], 1)}

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- request bodies (module level: FastAPI resolves their annotations by name) ----------------


Id = Annotated[int, Field(ge=1, le=2**53, description="a row id")]


class Body(BaseModel):
    """Unknown fields are errors; texts are stripped of surrounding whitespace."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class NewPerson(Body):
    name: str = Field(min_length=1, max_length=MAX_NAME)
    statement: str = Field("", max_length=MAX_TEXT, description="their preferences in their own words")
    weights: dict[str, Literal[-1, 0, 1]] = Field(default_factory=dict)

    @field_validator("weights")
    @classmethod
    def known_dimensions(cls, weights: dict[str, int]) -> dict[str, int]:
        from envs.features import ALL_DIMENSIONS

        unknown = sorted(set(weights) - set(ALL_DIMENSIONS))
        if unknown:
            raise ValueError(f"unknown dimension(s) {unknown}; allowed: {', '.join(ALL_DIMENSIONS)}")
        return weights


class NewComparison(Body):
    person_id: Id
    prompt: str = Field(min_length=1, max_length=MAX_TEXT)
    scenario_task: Optional[str] = Field(None, max_length=100)


class Judgement(Body):
    task_id: Id
    person_id: Id
    left_reply_id: Id
    right_reply_id: Id
    choice: Literal["left", "right", "tie"]
    left_rating: Optional[int] = Field(None, ge=1, le=5)
    right_rating: Optional[int] = Field(None, ge=1, le=5)
    critique: str = Field("", max_length=MAX_TEXT)


class ChatMessage(Body):
    person_id: Id
    policy: int = Field(ge=0, description="index of the policy to chat with")
    conversation: Optional[str] = Field(None, max_length=64)
    text: str = Field(min_length=1, max_length=MAX_TEXT)


# -- the app ----------------------------------------------------------------------------------


def create_app(store: FeedbackStore, policies: list[Any], tasks: ScenarioTasks, *,
               max_new_tokens: int = 128, temperature: float = 0.7, allowed_hosts: list[str] | None = None,
               rng: random.Random | None = None) -> Any:
    """The FastAPI app. ``policies`` are objects with ``label`` and ``reply(messages, seed=,
    max_new_tokens=, temperature=)`` (tests pass fakes); at least two, the same object twice means
    one model against itself."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    if len(policies) < 2:
        raise ValueError("serve needs two policies to compare")
    rng = rng or random.Random()
    jobs = Jobs()
    busy_conversations: set[str] = set()
    busy_lock = threading.Lock()
    generation = {"max_new_tokens": max_new_tokens, "temperature": temperature}

    app = FastAPI(title="attune feedback", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.jobs = store, jobs

    def problem(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors():
            if error.get("type") == "json_invalid":
                parts.append("body: not valid JSON")
                continue
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{where}: {message}")
        return problem(422, "; ".join(parts))

    @app.exception_handler(UnknownIdError)
    async def unknown_id(_request: Request, exc: UnknownIdError) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(AlreadyJudgedError)
    async def already_judged(_request: Request, exc: AlreadyJudgedError) -> JSONResponse:
        return problem(409, f"{exc}: load the next task")

    @app.exception_handler(FeedbackStoreError)
    async def bad_write(_request: Request, exc: FeedbackStoreError) -> JSONResponse:
        return problem(422, str(exc))

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    def require_person(person_id: int) -> dict:
        person = store.person(person_id)
        if person is None:
            raise UnknownIdError(f"person {person_id} does not exist: pick or create a profile")
        return person

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html")

    @app.get("/api/info")
    def info() -> dict:
        from envs.features import STYLE_DIMENSIONS

        return {"env_id": tasks.env_id, "policies": len(policies), "max_text": MAX_TEXT,
                "dimensions": list(STYLE_DIMENSIONS),
                "max_name": MAX_NAME, "same_model": policies[0] is policies[1]}

    @app.get("/api/people")
    def people() -> list[dict]:
        return [{"id": p["id"], "name": p["name"]} for p in store.people()]

    @app.post("/api/people", status_code=201)
    def add_person(body: NewPerson) -> dict:
        preferences: dict[str, Any] = {}
        if body.statement:
            preferences["statement"] = body.statement
        weights = {k: v for k, v in body.weights.items() if v != 0}
        if weights:
            preferences["weights"] = weights
        person_id = store.add_person(body.name, preferences)
        return {"id": person_id, "name": body.name}

    @app.get("/api/scenario-task")
    def scenario_task() -> dict:
        task_id = rng.choice(sorted(tasks.prompts))
        return {"scenario_task": task_id, "prompt": tasks.prompts[task_id], "env_id": tasks.env_id}

    @app.post("/api/comparisons", status_code=202)
    def compare(body: NewComparison) -> dict:
        require_person(body.person_id)
        scenario = None
        if body.scenario_task is not None:
            if body.scenario_task not in tasks.prompts:
                raise UnknownIdError(f"scenario task {body.scenario_task!r} does not exist in {tasks.env_id}")
            scenario = tasks.env_id
        task_id = store.add_task(body.prompt, scenario=scenario, person_id=body.person_id,
                                 scenario_task=body.scenario_task)
        pair = rng.sample(range(len(policies)), 2) if len(policies) > 2 else [0, 1]
        seed = rng.randrange(2**31)
        left_first = rng.random() < 0.5

        def work(progress: Callable[[str], None]) -> dict:
            messages = [{"role": "user", "content": body.prompt}]
            reply_ids, texts = [], []
            for n, index in enumerate(pair):
                progress(f"writing reply {n + 1} of 2")
                policy = policies[index]
                # Two policies share one sampling stream; one model against itself needs two.
                policy_seed = seed + n if policies[pair[0]] is policies[pair[1]] else seed
                text = policy.reply(messages, seed=policy_seed, **generation)
                reply_ids.append(store.add_reply(task_id, policy.label, text,
                                                 {**generation, "seed": policy_seed}))
                texts.append(text)
            shown = [0, 1] if left_first else [1, 0]
            return {"task_id": task_id,
                    "left": {"reply_id": reply_ids[shown[0]], "text": texts[shown[0]]},
                    "right": {"reply_id": reply_ids[shown[1]], "text": texts[shown[1]]}}

        return {"task_id": task_id, "job_id": jobs.submit(work, "waiting for the model")}

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str) -> Any:
        state = jobs.get(job_id)
        if state is None:
            return problem(404, f"job {job_id[:64]!r} does not exist (the server may have restarted): start again")
        return state

    @app.post("/api/judgements", status_code=201)
    def judge(body: Judgement) -> Any:
        task = store.task(body.task_id)
        if task is None:
            raise UnknownIdError(f"task {body.task_id} does not exist")
        require_person(body.person_id)
        if task["person_id"] is not None and task["person_id"] != body.person_id:
            return problem(409, f"task {body.task_id} was shown to another person: judge your own tasks")
        judgement_id = store.record_judgement(
            body.task_id, body.person_id, body.left_reply_id, body.right_reply_id, body.choice,
            left_rating=body.left_rating, right_rating=body.right_rating, critique=body.critique,
            once=True)
        return {"id": judgement_id}

    @app.post("/api/chat", status_code=202)
    def chat(body: ChatMessage) -> Any:
        require_person(body.person_id)
        if body.policy >= len(policies):
            return problem(404, f"policy {body.policy} does not exist: choose 0 to {len(policies) - 1}")
        policy = policies[body.policy]
        conversation = body.conversation or uuid.uuid4().hex
        history = store.chat(conversation) if body.conversation else []
        if body.conversation and not history:
            raise UnknownIdError(f"conversation {body.conversation!r} does not exist: start a new chat")
        if history and (history[0]["person_id"] != body.person_id or history[0]["model"] != policy.label):
            return problem(409, "this conversation belongs to another person or policy: start a new chat")
        with busy_lock:
            if conversation in busy_conversations:
                return problem(409, "the policy is still answering your last message: wait for it")
            busy_conversations.add(conversation)
        try:
            store.add_chat_turn(conversation, policy.label, "user", body.text, person_id=body.person_id)
        except Exception:
            with busy_lock:
                busy_conversations.discard(conversation)
            raise
        messages = [{"role": t["role"], "content": t["text"]} for t in history[-MAX_CHAT_TURNS:]]
        messages.append({"role": "user", "content": body.text})
        seed = rng.randrange(2**31)

        def work(progress: Callable[[str], None]) -> dict:
            try:
                progress("the policy is writing")
                text = policy.reply(messages, seed=seed, **generation)
                turn = store.add_chat_turn(conversation, policy.label, "assistant", text,
                                           person_id=body.person_id)
                return {"conversation": conversation, "turn_id": turn, "text": text}
            finally:
                with busy_lock:
                    busy_conversations.discard(conversation)

        return {"conversation": conversation, "job_id": jobs.submit(work, "waiting for the model")}

    @app.get("/api/chat/{conversation}")
    def chat_turns(conversation: str) -> Any:
        turns = store.chat(conversation)
        if not turns:
            return problem(404, f"conversation {conversation[:64]!r} does not exist")
        return [{"role": t["role"], "text": t["text"]} for t in turns]

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.router.add_event_handler("shutdown", jobs.shutdown)
    # Outermost layers: refuse oversized bodies before anything reads them; on loopback, answer only
    # requests addressed to loopback (a web page elsewhere cannot reach it by DNS rebinding).
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    return app


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 and a clear message, whether it
    announces its length or streams (chunked). Bodies are small, so an allowed one is read here and
    handed on whole."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, int(declared))
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send, size)
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Callable, size: int) -> None:
        body = json.dumps({"detail": f"request body is {size} bytes or more; the limit is {self.limit} bytes "
                                     f"(texts up to {MAX_TEXT} characters)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


# -- the command ------------------------------------------------------------------------------

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror}): pass another --port, "
                             "e.g. --port 8001") from None


def serve(runs: list[Path], port: int = 8000, db: Path = Path("feedback.sqlite"), host: str = "127.0.0.1",
          model: str | None = None, env_id: str | None = None, max_new_tokens: int = 128,
          temperature: float = 0.7, console: Any = None) -> None:
    """Load the policies, open the store and serve the page until Ctrl-C."""
    import uvicorn
    from rich.console import Console

    from experiments.feedback_store import open_store

    console = console or Console()
    if not 0 < port < 65536:
        raise ServeError(f"--port {port} is not a port number: use 1-65535, e.g. 8000")
    if max_new_tokens < 1 or max_new_tokens > 2048:
        raise ServeError(f"--max-new-tokens {max_new_tokens}: use 1 to 2048")
    if temperature < 0:
        raise ServeError(f"--temperature {temperature}: use 0 (greedy) or more")
    for run in runs:
        if not (Path(run) / "config.yaml").is_file():  # before the slow model loading
            load_run_policy(Path(run))
    check_port_free(host, port)
    tasks = ScenarioTasks.of(env_id) if env_id else None  # a bad --env fails before the slow loading
    loading = [str(run) for run in runs] + ([model] if model else [] if runs else ["the default model"])
    console.print(f"[bold]attune serve[/] loading {', '.join(loading)}")
    policies, run_env = load_policies(list(runs), model)
    tasks = tasks or ScenarioTasks.of(run_env or DEFAULT_ENV)
    store = open_store(db)
    loopback = host in LOOPBACK
    app = create_app(store, policies, tasks, max_new_tokens=max_new_tokens, temperature=temperature,
                     allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"] if loopback else None)
    shown = f"[{host}]" if ":" in host else host
    labels = " vs ".join(dict.fromkeys(p.label for p in policies)) if len(policies) > 2 or \
        policies[0] is not policies[1] else f"{policies[0].label} vs itself"
    console.print(f"comparing {labels}; tasks from {tasks.env_id}; feedback into {db}")
    if not loopback:
        console.print(f"[yellow]warning:[/] listening on {host}: anyone who can reach this machine can use the page")
    console.print(f"open http://{shown}:{port}/  (Ctrl-C stops)", soft_wrap=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        store.close()
