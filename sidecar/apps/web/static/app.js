// The search page: one query (text and/or image), first-stage and reranked columns, per-stage times.
// Plain browser JavaScript, no build step; talks to /api/config and /api/search of sidecar/web/app.py.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { image: null, engines: [], experiment: null, queryId: null, session: sessionId() };

function sessionId() {
  // one id per browser, so an A/B assignment or an interleaved log can tell users apart
  let id = window.localStorage.getItem("rerank-session");
  if (!id) {
    id = (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Math.random()).slice(2);
    window.localStorage.setItem("rerank-session", id);
  }
  return id;
}

function fmt(score) {
  return score === null || score === undefined ? "–" : Number(score).toFixed(4);
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "muted error" : "muted";
}

function fillModes() {
  const engine = state.engines.find((e) => e.name === $("engine").value);
  const modes = engine ? engine.modes : [];
  const current = $("mode").value;
  $("mode").replaceChildren(...modes.map((mode) => new Option(mode, mode)));
  // keep the chosen mode where this engine has it; otherwise hybrid (dense kNN + BM25) when offered
  $("mode").value = modes.includes(current) ? current : modes.includes("hybrid") ? "hybrid" : modes[0] || "";
}

function setImage(dataUri) {
  state.image = dataUri;
  $("preview").hidden = $("clear-image").hidden = !dataUri;
  if (dataUri) {
    $("preview").src = dataUri;
    if (!$("text").value.trim()) $("mode").value = "dense"; // an image-only query searches by vector
  } else {
    $("image").value = "";
  }
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function imageFromUrl(url) {
  const blob = await (await fetch(url)).blob();
  return readFile(blob);
}

function row(hit, reranked) {
  const li = document.createElement("li");
  li.dataset.id = hit.id;
  const rank = Object.assign(document.createElement("span"), { className: "rank", textContent: hit.rank });
  const img = document.createElement("img");
  img.alt = hit.title;
  img.loading = "lazy";
  if (hit.image) img.src = hit.image;
  const body = document.createElement("div");
  body.append(Object.assign(document.createElement("div"), { className: "title", textContent: hit.title }));
  const scores = `first stage ${fmt(hit.first_stage_score)} (#${hit.first_stage_rank}) · rerank ${fmt(hit.rerank_score)}`;
  body.append(Object.assign(document.createElement("div"), { className: "scores", textContent: scores }));
  const change = document.createElement("span");
  change.className = "change";
  if (reranked) {
    change.textContent = hit.change > 0 ? `▲${hit.change}` : hit.change < 0 ? `▼${-hit.change}` : "=";
    change.className += hit.change > 0 ? " up" : hit.change < 0 ? " down" : "";
    change.title = `was #${hit.first_stage_rank}`;
  }
  li.append(rank, img, body, change);
  return li;
}

function show(result) {
  $("first-stage").replaceChildren(...result.first_stage.map((h) => row(h, false)));
  $("reranked").replaceChildren(...result.reranked.map((h) => row(h, true)));
  const t = result.timings_ms;
  const stages = [["query embedding", t.embed], ["first stage (" + result.engine + ", " + result.mode + ")", t.search],
    ["rerank " + result.candidates, t.rerank], ["total", t.total]];
  $("timings").replaceChildren(...stages.filter(([, ms]) => ms !== undefined).map(([name, ms]) =>
    Object.assign(document.createElement("span"), { textContent: `${name}: ${ms.toFixed(0)} ms` })));
}

function experimentMode() {
  return Boolean(state.experiment) && $("experiment-mode").checked;
}

async function postEvents(events) {
  const response = await fetch("/api/events", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ events }),
  });
  const result = await response.json();
  if (!response.ok) throw new Error(result.error || response.statusText);
  return result.recorded;
}

function interleavedRow(hit, queryId) {
  const li = row(hit, false);
  li.dataset.arm = hit.arm;
  li.querySelector(".change").replaceWith(Object.assign(document.createElement("span"), {
    className: "arm", textContent: hit.arm === "reranked" ? "reranked" : "first stage" }));
  li.addEventListener("click", async () => {
    li.classList.add("clicked");
    try {
      await postEvents([{ action_name: "click", query_id: queryId, object_id: hit.id, position: hit.rank,
        session_id: state.session }]);
      await refreshReport();
    } catch (error) { setStatus(`Click not recorded: ${error.message}`, true); }
  });
  return li;
}

async function refreshReport() {
  const report = await (await fetch("/api/experiment")).json();
  const box = $("report");
  box.dataset.queries = report.queries;
  box.dataset.events = report.events;
  const pair = (report.pairs || [])[0];
  if (!pair) { box.textContent = `${report.queries} interleaved queries so far, no clicks yet.`; return; }
  box.dataset.wins = pair.wins; box.dataset.losses = pair.losses; box.dataset.ties = pair.ties;
  const verdict = pair.winner ? `${pair.winner} wins` : "no difference yet";
  box.textContent = `${report.queries} queries · first stage won ${pair.wins}, reranked won ${pair.losses}, ` +
    `ties ${pair.ties}, without clicks ${pair.no_clicks} · p = ${pair.p_value.toPrecision(3)} · ${verdict}`;
}

function showExperiment(result) {
  state.queryId = result.query_id;
  $("interleaved").replaceChildren(...result.interleaved.map((h) => interleavedRow(h, result.query_id)));
  return postEvents(result.interleaved.map((h) => ({ action_name: "impression", query_id: result.query_id,
    object_id: h.id, position: h.rank, session_id: state.session })));
}

async function search(event) {
  if (event) event.preventDefault();
  const text = $("text").value.trim();
  if (!text && !state.image) return setStatus("Type a query or choose an image.", true);
  if (!text && $("mode").value !== "dense") $("mode").value = "dense"; // BM25 and hybrid need query text
  setStatus("Searching…", false);
  document.body.dataset.state = "searching";
  const body = { engine: $("engine").value, mode: $("mode").value, text, image: state.image,
    top_k: Number($("top-k").value) || 20, show: 10, experiment: experimentMode(), session_id: state.session };
  $("experiment-panel").hidden = !body.experiment;
  $("columns").hidden = body.experiment;
  try {
    const response = await fetch("/api/search", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const result = await response.json();
    if (!response.ok) throw new Error(result.error || response.statusText);
    if (body.experiment) {
      await showExperiment(result);
      await refreshReport();
      setStatus(`Interleaved list (query ${result.query_id.slice(0, 8)}); click the results you would pick.`, false);
    } else {
      show(result);
      setStatus(`${result.candidates} candidates reranked.`, false);
    }
    document.body.dataset.state = "done";
  } catch (error) {
    setStatus(`Error: ${error.message}`, true);
    document.body.dataset.state = "error";
  }
}

function addExamples(examples) {
  const box = $("examples");
  if (!examples.length) return;
  box.append(Object.assign(document.createElement("span"), { className: "muted", textContent: "Try:" }));
  for (const example of examples) {
    const button = document.createElement("button");
    button.type = "button";
    if (example.image) {
      button.append(Object.assign(document.createElement("img"), { src: example.image, alt: example.note || "" }));
      button.title = example.note || example.image;
      button.onclick = async () => { $("text").value = ""; setImage(await imageFromUrl(example.image)); search(); };
    } else {
      button.textContent = example.text;
      button.onclick = () => { $("text").value = example.text; setImage(null); $("mode").value = "hybrid"; search(); };
    }
    box.append(button);
  }
}

async function init() {
  $("search").addEventListener("submit", search);
  $("engine").addEventListener("change", fillModes);
  $("clear-image").addEventListener("click", () => setImage(null));
  $("image").addEventListener("change", async () => {
    const file = $("image").files[0];
    setImage(file ? await readFile(file) : null);
  });
  try {
    const config = await (await fetch("/api/config")).json();
    state.engines = config.engines;
    for (const engine of config.engines) $("engine").append(new Option(engine.name, engine.name));
    fillModes();
    $("label").textContent = config.label;
    addExamples(config.examples || []);
    state.experiment = config.experiment;
    $("experiment-toggle").hidden = !config.experiment;
    document.body.dataset.state = "ready";
  } catch (error) {
    setStatus(`Could not load the configuration: ${error.message}`, true);
  }
}

init();
