// attune feedback page. Every text from the server or the person is shown with textContent, never as HTML.
"use strict";

const state = { person: null, scenarioTask: null, comparison: null, conversation: null, dimensions: [] };
const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("the server cannot be reached: is `attune serve` still running?");
  }
  let data = null;
  try { data = await response.json(); } catch (err) { /* not JSON */ }
  if (!response.ok) {
    const detail = data && data.detail ? data.detail : response.statusText;
    throw new Error(`${detail} (HTTP ${response.status})`);
  }
  return data;
}

function showError(err) {
  const box = $("error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

async function guarded(button, action) {
  showError(null);
  if (button) button.disabled = true;
  try {
    await action();
  } catch (err) {
    showError(err);
  } finally {
    if (button) button.disabled = false;
  }
}

function setProgress(text) {
  $("progress").hidden = text === null;
  if (text !== null) $("progress-text").textContent = text;
}

// Generation runs on the server's worker thread: poll the job until it is done or failed.
async function waitForJob(jobId) {
  try {
    for (;;) {
      const job = await api("GET", `/api/jobs/${encodeURIComponent(jobId)}`);
      setProgress(`${job.progress} (${job.seconds} s)`);
      if (job.status === "done") return job.result;
      if (job.status === "failed") throw new Error(job.error);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  } finally {
    setProgress(null);
  }
}

function option(value, text) {
  const el = document.createElement("option");
  el.value = value;
  el.textContent = text;
  return el;
}

async function loadPeople(selectId) {
  const people = await api("GET", "/api/people");
  const select = $("person-select");
  select.replaceChildren(option("", "(choose)"), ...people.map((p) => option(p.id, `${p.name} (#${p.id})`)));
  if (selectId !== undefined) select.value = String(selectId);
  $("new-person").open = people.length === 0;
}

function usePerson(person) {
  state.person = person;
  $("who").textContent = `Judging as ${person.name} (#${person.id}).`;
  $("task-section").hidden = false;
  $("chat-section").hidden = false;
  state.conversation = null;
  $("chat-log").replaceChildren();
}

async function createPerson(event) {
  event.preventDefault();
  await guarded($("create-person"), async () => {
    const weights = {};
    for (const dim of state.dimensions) {
      const value = Number($(`weight-${dim}`).value);
      if (value !== 0) weights[dim] = value;
    }
    const person = await api("POST", "/api/people", {
      name: $("person-name").value, statement: $("person-statement").value, weights,
    });
    await loadPeople(person.id);
    usePerson(person);
    $("person-name").value = "";
    $("person-statement").value = "";
    await nextTask();
  });
}

async function nextTask() {
  const task = await api("GET", "/api/scenario-task");
  state.scenarioTask = task;
  $("prompt").value = task.prompt;
  $("task-origin").textContent = `from ${task.env_id}, task ${task.scenario_task}`;
}

function showReply(id, text) {
  const el = $(id);
  el.textContent = text || "(empty reply)";
  el.classList.toggle("empty", !text);
}

async function compare() {
  await guarded($("compare"), async () => {
    if (!state.person) throw new Error("pick or create a profile first");
    const prompt = $("prompt").value;
    const fromScenario = state.scenarioTask && state.scenarioTask.prompt === prompt;
    $("saved").hidden = true;
    $("compare-section").hidden = true;
    const started = await api("POST", "/api/comparisons", {
      person_id: state.person.id, prompt,
      scenario_task: fromScenario ? state.scenarioTask.scenario_task : null,
    });
    const result = await waitForJob(started.job_id);
    state.comparison = result;
    $("shown-prompt").textContent = prompt;
    showReply("left-text", result.left.text);
    showReply("right-text", result.right.text);
    for (const id of ["left-rating", "right-rating"]) $(id).value = "";
    for (const radio of document.querySelectorAll("input[name=choice]")) radio.checked = false;
    $("critique").value = "";
    $("compare-section").hidden = false;
  });
}

async function submitJudgement() {
  await guarded($("submit-judgement"), async () => {
    const chosen = document.querySelector("input[name=choice]:checked");
    if (!chosen) throw new Error("choose A, B or about the same before submitting");
    const c = state.comparison;
    const rating = (id) => ($(id).value ? Number($(id).value) : null);
    const saved = await api("POST", "/api/judgements", {
      task_id: c.task_id, person_id: state.person.id,
      left_reply_id: c.left.reply_id, right_reply_id: c.right.reply_id,
      choice: chosen.value, left_rating: rating("left-rating"), right_rating: rating("right-rating"),
      critique: $("critique").value,
    });
    // The row is committed before the server answers; only now does the next task load.
    $("compare-section").hidden = true;
    $("saved").hidden = false;
    $("saved").textContent = `Saved judgement #${saved.id}. Thank you!`;
    await nextTask();
  });
}

function addTurn(role, text) {
  const el = document.createElement("div");
  el.className = `turn ${role}`;
  el.textContent = `${role === "user" ? "You" : "Policy"}: ${text || "(empty reply)"}`;
  $("chat-log").append(el);
  el.scrollIntoView({ block: "nearest" });
}

async function sendChat(event) {
  event.preventDefault();
  await guarded($("chat-send"), async () => {
    if (!state.person) throw new Error("pick or create a profile first");
    const text = $("chat-text").value;
    const started = await api("POST", "/api/chat", {
      person_id: state.person.id, policy: Number($("chat-policy").value),
      conversation: state.conversation, text,
    });
    state.conversation = started.conversation;
    $("chat-policy").disabled = true;
    $("chat-text").value = "";
    addTurn("user", text);
    const result = await waitForJob(started.job_id);
    addTurn("assistant", result.text);
  });
}

function newChat() {
  state.conversation = null;
  $("chat-policy").disabled = false;
  $("chat-log").replaceChildren();
}

async function init() {
  const info = await api("GET", "/api/info");
  state.dimensions = info.dimensions;
  const weights = $("weights");
  for (const dim of info.dimensions) {
    const label = document.createElement("label");
    label.textContent = `${dim.replace("_", " ")} `;
    const select = document.createElement("select");
    select.id = `weight-${dim}`;
    select.append(option("0", "no preference"), option("1", "more"), option("-1", "less"));
    label.append(select);
    weights.append(label);
  }
  const policies = $("chat-policy");
  const names = info.same_model ? ["the model"] : Array.from({ length: info.policies }, (_, i) => `Policy ${i + 1}`);
  policies.replaceChildren(...names.map((name, i) => option(i, name)));
  await loadPeople();
  $("person-form").addEventListener("submit", createPerson);
  $("use-person").addEventListener("click", () => guarded($("use-person"), async () => {
    const select = $("person-select");
    if (!select.value) throw new Error("choose a profile from the list, or create one");
    const name = select.selectedOptions[0].textContent.replace(/ \(#\d+\)$/, "");
    usePerson({ id: Number(select.value), name });
    await nextTask();
  }));
  $("get-task").addEventListener("click", () => guarded($("get-task"), nextTask));
  $("compare").addEventListener("click", compare);
  $("submit-judgement").addEventListener("click", submitJudgement);
  $("chat-form").addEventListener("submit", sendChat);
  $("chat-new").addEventListener("click", newChat);
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", () => init().catch(showError));
