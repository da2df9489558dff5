// steercf explorer: one page over the JSON API (no framework, no build step).
"use strict";

const state = {
  info: null,
  // recommender
  mode: "user",            // "user" | "profile"
  user: null,
  profile: new Map(),      // item id -> title
  sliders: new Map(),      // "c:Horror" | "n:12" -> {kind, target, label, strength}
  allConcepts: null,       // every concept of the source when there are few, else null
  freshUser: true,         // rebuild the per-user sliders on the next answer
  seq: 0,
  timer: null,
  recLatentOffset: 0,
  // text
  query: "",
  latentSliders: new Map(), // latent id -> {label, strength}
  searchSeq: 0,
  searchTimer: null,
  latentOffset: 0,
};
const FEW_CONCEPTS = 24;   // show every concept as a slider up to this many
const USER_LATENT_SLIDERS = 5;
const QUERY_LATENT_SLIDERS = 10;
const PAGE = 50;

// ---- small helpers ------------------------------------------------------------------
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  let payload;
  try { payload = await response.json(); } catch { payload = {}; }
  if (!response.ok) throw new Error(payload.error || `HTTP ${response.status}`);
  return payload;
}

function showError(message) { const box = $("error"); box.textContent = message; box.hidden = false; }
function clearError() { $("error").hidden = true; }
const fmt = (x, digits = 2) => Number(x).toFixed(digits);
const short = (text, n = 70) => (text.length > n ? text.slice(0, n - 1) + "…" : text);

function setupTabs(tabs) {
  const nav = $("tabs");
  nav.replaceChildren();
  for (const [name, label] of tabs) {
    nav.append(el("button", {id: `tab-${name}`, text: label, onclick: () => showTab(name)}));
  }
  showTab(tabs[0][0]);
}

function showTab(name) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== `view-${name}`;
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.id === `tab-${name}`);
  }
}

function histogram(hist, unit) {
  const width = 360, height = 120, pad = 18;
  const max = Math.max(1, ...hist.counts);
  const barWidth = (width - 2 * pad) / hist.counts.length;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "histogram");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  hist.counts.forEach((count, i) => {
    const h = (count / max) * (height - 2 * pad);
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", pad + i * barWidth + 1);
    rect.setAttribute("y", height - pad - h);
    rect.setAttribute("width", Math.max(1, barWidth - 2));
    rect.setAttribute("height", h);
    const tip = document.createElementNS(ns, "title");
    tip.textContent = `${fmt(hist.edges[i], 3)}–${fmt(hist.edges[i + 1], 3)}: ${count} ${unit}`;
    rect.append(tip);
    svg.append(rect);
  });
  const label = (x, text, anchor) => {
    const node = document.createElementNS(ns, "text");
    node.setAttribute("x", x);
    node.setAttribute("y", height - 4);
    node.setAttribute("text-anchor", anchor);
    node.textContent = text;
    svg.append(node);
  };
  label(pad, "0", "start");
  label(width - pad, fmt(hist.edges[hist.edges.length - 1], 2), "end");
  label(width / 2, `activation (max count ${max})`, "middle");
  return svg;
}

function sliderRow({key, name, title, value, min, max, step, onInput, onRemove}) {
  const output = el("span", {class: "value", text: fmt(value)});
  const input = el("input", {
    type: "range", min, max, step, value, "aria-label": name, dataset: {key},
  });
  const row = el("div", {class: value !== 0 ? "slider on" : "slider"},
    el("span", {class: "name", title: title || name, text: name}),
    input, output,
    onRemove ? el("button", {title: "remove", text: "×", onclick: onRemove}) : el("span"));
  input.addEventListener("input", () => {
    const v = Number(input.value);
    output.textContent = fmt(v);
    row.classList.toggle("on", v !== 0);
    onInput(v);
  });
  return row;
}

// ---- recommender: steering ------------------------------------------------------------
function strengthRange() {
  const [min, max] = state.info.strength_range[$("rule").value];
  return {min, max, step: max > 1 ? 0.1 : 0.05};
}

function renderSliders() {
  const range = strengthRange();
  const concepts = $("concept-sliders"), latents = $("rec-latent-sliders");
  concepts.replaceChildren();
  latents.replaceChildren();
  for (const [key, s] of state.sliders) {
    s.strength = Math.min(range.max, Math.max(range.min, s.strength));
    const removable = s.kind === "latent" || state.allConcepts === null;
    const row = sliderRow({
      key, value: s.strength, ...range,
      name: s.kind === "latent" ? `#${s.target} ${s.label || ""}` : s.target,
      title: s.label,
      onInput: (v) => { s.strength = v; scheduleRefresh(); },
      onRemove: removable ? () => { state.sliders.delete(key); renderSliders(); scheduleRefresh(); } : null,
    });
    (s.kind === "latent" ? latents : concepts).append(row);
  }
}

function addConcept(name, strength = 0) {
  const key = `c:${name}`;
  if (!state.sliders.has(key)) state.sliders.set(key, {kind: "concept", target: name, strength});
}

function addRecLatent(id, label, strength = 0) {
  const key = `n:${id}`;
  if (!state.sliders.has(key)) state.sliders.set(key, {kind: "latent", target: id, label, strength});
}

async function loadConcepts() {
  const source = $("source").value;
  const answer = await api(`/api/concepts?source=${encodeURIComponent(source)}&limit=500`);
  $("concept-options").replaceChildren(...answer.concepts.map((c, i) => el("option", {value: c, label: answer.display[i] !== c ? answer.display[i] : null})));
  for (const key of [...state.sliders.keys()]) if (key.startsWith("c:")) state.sliders.delete(key);
  state.allConcepts = answer.total <= FEW_CONCEPTS ? answer.concepts : null;
  if (state.allConcepts) state.allConcepts.forEach((c) => addConcept(c));
  renderSliders();
}

function requestBody() {
  const knobs = [];
  for (const s of state.sliders.values()) {
    if (s.strength === 0) continue;
    knobs.push(s.kind === "concept" ? {concept: s.target, strength: s.strength}
                                    : {latent: s.target, strength: s.strength});
  }
  const body = {
    knobs,
    rule: $("rule").value,
    source: $("source").value,
    mapping: $("mapping").value,
    top_latents: Number($("top-latents").value),
    n: Number($("list-n").value),
  };
  if (state.mode === "user") body.user = state.user; else body.items = [...state.profile.keys()];
  return body;
}

function scheduleRefresh(delay = 40) {
  clearTimeout(state.timer);
  state.timer = setTimeout(refresh, delay);
}

async function refresh() {
  if (state.mode === "user" && !state.user) return;
  if (state.mode === "profile" && state.profile.size === 0) {
    $("user-summary").replaceChildren(el("p", {class: "muted", text: "Add items to the profile to see its recommendations."}));
    $("before-list").replaceChildren();
    $("after-list").replaceChildren();
    return;
  }
  const mine = ++state.seq;
  $("steer-status").textContent = "…";
  try {
    const started = performance.now();
    const result = await api("/api/recommend", requestBody());
    if (mine !== state.seq) return; // a newer slider position is on its way
    clearError();
    renderRecommendations(result);
    const turned = result.knobs.map((k) => `${k.name} ${k.strength > 0 ? "+" : ""}${fmt(k.strength)}`);
    $("steer-status").textContent = turned.length
      ? `${turned.join(", ")} · ${Math.round(performance.now() - started)} ms` : "(no knob turned)";
  } catch (err) {
    if (mine === state.seq) { showError(err.message); $("steer-status").textContent = ""; }
  }
}

// ---- the 2-D map: test users before (grey) and after (blue) steering, anchor items (red) ----
function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

async function showMap() {
  const {knobs, rule, source, mapping, top_latents} = requestBody();
  $("map-status").textContent = "…";
  try {
    const m = await api("/api/map", {knobs, rule, source, mapping, top_latents});
    clearError();
    const points = [...m.before, ...m.after, ...m.anchors];
    const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const sx = (x) => 20 + 600 * (x - x0) / ((x1 - x0) || 1);
    const sy = (y) => 400 - 380 * (y - y0) / ((y1 - y0) || 1);
    const box = $("steer-map");
    box.replaceChildren();
    m.before.forEach((p, i) => {
      const q = m.after[i];
      box.append(svg("line", {x1: sx(p[0]), y1: sy(p[1]), x2: sx(q[0]), y2: sy(q[1]), stroke: "#4a7fc1", "stroke-opacity": 0.25}));
      box.append(svg("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: "#999"}));
      box.append(svg("circle", {class: "map-after", cx: sx(q[0]), cy: sy(q[1]), r: 2.5, fill: "#4a7fc1"}));
    });
    m.anchors.forEach((p, i) => {
      const star = svg("circle", {class: "map-anchor", cx: sx(p[0]), cy: sy(p[1]), r: 5, fill: "#c0392b"});
      const title = svg("title");
      title.textContent = m.items[i].title;
      star.append(title);
      box.append(star);
    });
    box.hidden = false;
    $("map-status").textContent = `${m.projection.toUpperCase()} · ${m.n_users} test users · ${Math.round(100 * m.moved_toward)} % moved toward the red anchor items (${m.items.slice(0, 3).map((it) => it.title).join("; ")}…)`;
  } catch (err) {
    $("map-status").textContent = "";
    showError(err.message);
  }
}

function itemRow(item, side, changed) {
  let badge = null;
  if (side === "after") {
    if (item.before_rank === null) badge = el("span", {class: "badge new", text: "new"});
    else if (item.before_rank !== item.rank) {
      const up = item.before_rank > item.rank;
      badge = el("span", {class: `badge ${up ? "up" : "down"}`, text: `${up ? "▲" : "▼"}${Math.abs(item.before_rank - item.rank)}`});
    }
  }
  const why = item.why && item.why.length
    ? el("div", {class: "why", title: "each reason: a latent, what it adds to the score and its share of what all the user's latents add (their positive parts)\n"
          + item.why.map((w) => `#${w.latent} (+${fmt(w.contribution, 3)}, ${Math.round(100 * w.share)} %): ${w.label}`).join("\n")},
        "because of ", ...item.why.slice(0, 2).map((w, i) => [i ? "; " : "",
          el("a", {class: "link", text: `#${w.latent}`, onclick: () => openRecLatent(w.latent)}),
          ` ${short(w.label, 40)} (${Math.round(100 * w.share)} % of the latents' lift)`]))
    : null;
  return el("li", {class: changed ? (side === "after" ? "entered" : "left") : "", dataset: {id: item.id}},
    el("span", {class: "rank", text: item.rank}),
    el("div", {},
      el("div", {class: "title"}, el("span", {class: "name", text: item.title}), badge),
      item.tags.length ? el("div", {class: "tags", text: item.tags.join(" · ")}) : null,
      why),
    el("span", {class: "score", text: fmt(item.score, 3)}));
}

function renderRecommendations(result) {
  const entered = new Set(result.entered), left = new Set(result.left);
  $("before-list").replaceChildren(...result.before.map((item) => itemRow(item, "before", left.has(item.index))));
  $("after-list").replaceChildren(...result.after.map((item) => itemRow(item, "after", entered.has(item.index))));
  const who = result.user !== null ? `User ${result.user}` : "Your profile";
  $("user-summary").replaceChildren(
    el("h2", {text: `${who} · ${result.history.n} items liked`}),
    el("div", {class: "chips"}, el("span", {class: "muted", text: "top concepts:"}),
      ...result.concepts.map((c) => el("span", {class: "chip link", title: "add a slider",
        text: `${c.concept} ${fmt(c.weight)}`, onclick: () => { addConcept(c.concept); renderSliders(); }}))),
    el("div", {class: "chips"}, el("span", {class: "muted", text: "active latents:"}),
      ...result.latents.map((n) => el("span", {class: "chip link", title: n.label,
        text: `#${n.latent} ${fmt(n.activation)} ${short(n.label, 28)}`, onclick: () => openRecLatent(n.latent)}))),
    el("details", {}, el("summary", {text: "history"}),
      el("div", {class: "muted", text: result.history.items.map((i) => i.title).join(" · ")})));
  if (state.freshUser) {
    // per-user sliders: keep what is turned, offer this user's own latents and concepts
    state.freshUser = false;
    for (const [key, s] of [...state.sliders]) if (s.strength === 0 && (s.kind === "latent" || !state.allConcepts)) state.sliders.delete(key);
    result.latents.slice(0, USER_LATENT_SLIDERS).forEach((n) => addRecLatent(n.latent, n.label));
    if (!state.allConcepts) result.concepts.slice(0, 5).forEach((c) => addConcept(c.concept));
    renderSliders();
  }
}

async function loadUser(id) {
  state.mode = "user";
  state.user = String(id).trim();
  state.freshUser = true;
  $("user-input").value = state.user;
  await refresh();
}

async function searchItems() {
  const q = $("item-search").value.trim();
  if (!q) { $("item-results").replaceChildren(); return; }
  try {
    const answer = await api(`/api/items?q=${encodeURIComponent(q)}&limit=12`);
    $("item-results").replaceChildren(...answer.items.map((item) => el("li", {
      title: item.tags.join(", "), dataset: {id: item.id},
      onclick: () => { state.profile.set(item.id, item.title); renderProfile(); state.freshUser = true; scheduleRefresh(0); },
    }, el("span", {class: "muted", text: "+"}), item.title)));
    clearError();
  } catch (err) { showError(err.message); }
}

function renderProfile() {
  $("profile-items").replaceChildren(...[...state.profile].map(([id, title]) => el("span", {class: "chip"}, title,
    el("button", {title: "remove", text: "×", onclick: () => { state.profile.delete(id); renderProfile(); scheduleRefresh(0); }}))));
}

async function initRecommender(info) {
  const d = info.defaults;
  $("model-info").textContent = `${info.model} on ${info.dataset} · ${info.n_users} users · ${info.n_items} items · ${info.n_live} live of ${info.n_latents} latents`;
  setupTabs([["recommend", "Recommendations"], ["rec-latents", "Latents"]]);
  const fill = (select, values, value) => {
    select.replaceChildren(...values.map((v) => el("option", {value: v, text: v})));
    select.value = value;
  };
  fill($("rule"), info.rules, d.rule);
  fill($("source"), info.sources, d.source);
  fill($("mapping"), info.mappings, d.mapping);
  $("top-latents").value = d.top_latents;
  $("list-n").value = d.n;
  $("user-options").replaceChildren(...info.example_users.map((u) => el("option", {value: u})));

  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => {
      state.mode = radio.value;
      $("user-box").hidden = state.mode !== "user";
      $("profile-box").hidden = state.mode !== "profile";
      state.freshUser = true;
      scheduleRefresh(0);
    });
  }
  $("load-user").addEventListener("click", () => loadUser($("user-input").value));
  $("map-btn").addEventListener("click", showMap);
  $("user-input").addEventListener("keydown", (e) => { if (e.key === "Enter") loadUser($("user-input").value); });
  $("user-input").addEventListener("input", async () => {
    const q = $("user-input").value.trim();
    try {
      const answer = await api(`/api/users?q=${encodeURIComponent(q)}&limit=20`);
      $("user-options").replaceChildren(...answer.users.map((u) => el("option", {value: u.id, label: `${u.n_items} items`})));
    } catch (err) { /* typing: the list simply stays as it was */ }
  });
  let itemTimer = null;
  $("item-search").addEventListener("input", () => { clearTimeout(itemTimer); itemTimer = setTimeout(searchItems, 150); });
  $("clear-profile").addEventListener("click", () => { state.profile.clear(); renderProfile(); scheduleRefresh(0); });
  $("rule").addEventListener("change", () => { renderSliders(); scheduleRefresh(0); });
  $("source").addEventListener("change", async () => { await loadConcepts(); state.freshUser = true; scheduleRefresh(0); });
  for (const id of ["mapping", "top-latents", "list-n"]) $(id).addEventListener("change", () => scheduleRefresh(0));
  const addConceptFromBox = () => {
    const name = $("add-concept").value.trim();
    if (name) { addConcept(name); renderSliders(); $("add-concept").value = ""; }
  };
  $("add-concept-btn").addEventListener("click", addConceptFromBox);
  $("add-concept").addEventListener("keydown", (e) => { if (e.key === "Enter") addConceptFromBox(); });
  $("rec-add-latent-btn").addEventListener("click", async () => {
    const id = Number($("rec-add-latent").value);
    if (!Number.isInteger(id) || $("rec-add-latent").value === "") return;
    try {
      const latent = await api(`/api/latents/${id}`);
      addRecLatent(latent.latent, latent.label);
      renderSliders();
      $("rec-add-latent").value = "";
      clearError();
    } catch (err) { showError(err.message); }
  });
  $("reset").addEventListener("click", () => {
    for (const s of state.sliders.values()) s.strength = 0;
    renderSliders();
    scheduleRefresh(0);
  });
  $("rec-latent-query").addEventListener("input", () => { clearTimeout(state.recLatentTimer); state.recLatentTimer = setTimeout(() => loadRecLatents(true), 150); });
  $("rec-latent-more").addEventListener("click", () => loadRecLatents(false));

  await loadConcepts();
  await Promise.all([loadUser(d.user), loadRecLatents(true)]);
}

// ---- recommender: latent browser --------------------------------------------------------
async function loadRecLatents(reset) {
  if (reset) { state.recLatentOffset = 0; $("rec-latent-list").replaceChildren(); }
  const q = $("rec-latent-query").value.trim();
  try {
    const answer = await api(`/api/latents?q=${encodeURIComponent(q)}&limit=${PAGE}&offset=${state.recLatentOffset}`);
    state.recLatentOffset += answer.latents.length;
    $("rec-latent-total").textContent = `${answer.total} latents${q ? " matching" : ""}, those active for the most of ${answer.n_users} users first; latents no user activates last`;
    $("rec-latent-list").append(...answer.latents.map((n) => el("li", {dataset: {latent: n.latent}, class: n.for_users ? null : "no-users", title: n.label, onclick: () => showRecLatent(n.latent)},
      el("span", {class: "muted", text: n.for_users ? `#${n.latent} · ${n.n_users} users` : `#${n.latent} · no user`}), short(n.label, 80))));
    $("rec-latent-more").hidden = state.recLatentOffset >= answer.total;
  } catch (err) { showError(err.message); }
}

function openRecLatent(id) { showTab("rec-latents"); showRecLatent(id); }

async function showRecLatent(id) {
  let n;
  try { n = await api(`/api/latents/${id}`); clearError(); } catch (err) { showError(err.message); return; }
  for (const li of $("rec-latent-list").children) li.classList.toggle("active", Number(li.dataset.latent) === n.latent);
  const itemList = (items, key) => el("ol", {}, ...items.map((i) => el("li", {}, i.title, el("span", {class: "muted", text: ` ${fmt(i[key], 3)}`}))));
  $("rec-latent-detail").replaceChildren(
    el("h2", {text: `Latent ${n.latent}`}),
    el("p", {text: n.label}),
    el("p", {class: "muted", text: n.live ? `fires for ${n.n_items} single-item histories; for ${n.histogram.n_active} of ${n.histogram.n_users} users` : "dead: active for no training user"}),
    el("button", {text: "Steer with this latent", onclick: () => { addRecLatent(n.latent, n.label, 0.3); renderSliders(); showTab("recommend"); scheduleRefresh(0); }}),
    el("h3", {text: "Concepts (labels)"}),
    el("div", {class: "chips"}, ...n.concepts.map((c) => el("span", {class: "chip", text: `${c.source}: ${c.concept} ${fmt(c.score, 3)}`}))),
    el("h3", {text: "Steers toward"}),
    el("div", {class: "chips"}, ...n.steers_toward.map((c) => el("span", {class: "chip", text: `${c.concept} ${fmt(c.score, 3)}`}))),
    el("div", {class: "columns"},
      el("div", {}, el("h3", {text: "Top items (mean activation of their users)"}), itemList(n.top_items, "activation")),
      el("div", {}, el("h3", {text: "Items it lifts (decoder effect)"}), itemList(n.lifted_items, "effect"))),
    el("div", {class: "columns"},
      el("div", {}, el("h3", {text: "Activation over users"}), histogram(n.histogram, "users")),
      el("div", {}, el("h3", {text: "Nearest latents (decoder cosine)"}),
        el("ol", {}, ...n.nearest.map((m) => el("li", {},
          el("a", {class: "link", text: `#${m.latent}`, onclick: () => showRecLatent(m.latent)}),
          ` ${fmt(m.cosine, 3)} ${short(m.label, 60)}`))))));
}

// ---- text: steerable search -----------------------------------------------------------------
function renderLatentSliders() {
  $("latent-sliders").replaceChildren(...[...state.latentSliders].map(([id, s]) => sliderRow({
    key: `l:${id}`, name: `#${id} ${s.label}`, value: s.strength, min: -1, max: 1, step: 0.05,
    onInput: (v) => { s.strength = v; clearTimeout(state.searchTimer); state.searchTimer = setTimeout(search, 40); },
    onRemove: () => { state.latentSliders.delete(id); renderLatentSliders(); search(); },
  })));
}

function docRow(doc, side, changed) {
  let badge = null;
  if (side === "after" && doc.before_rank === null) badge = el("span", {class: "badge new", text: "new"});
  return el("li", {class: changed ? (side === "after" ? "entered" : "left") : "", dataset: {doc: doc.doc}},
    el("span", {class: "rank", text: doc.rank}),
    el("div", {}, el("div", {class: "title"}, el("span", {class: "name", text: doc.title}), badge), el("div", {class: "snippet", text: doc.snippet})),
    el("span", {class: "score", text: fmt(doc.score, 3)}));
}

async function search(newQuery = false) {
  const query = newQuery ? $("query-input").value.trim() : state.query;
  if (!query) return;
  if (newQuery) { state.query = query; state.latentSliders.clear(); }
  const mine = ++state.searchSeq;
  const sliders = [...state.latentSliders].filter(([, s]) => s.strength !== 0).map(([id, s]) => ({latent: id, strength: s.strength}));
  try {
    const result = await api("/api/search", {query, sliders, top: 10});
    if (mine !== state.searchSeq) return;
    clearError();
    if (newQuery) {
      result.latents.slice(0, QUERY_LATENT_SLIDERS).forEach((l) => state.latentSliders.set(l.latent, {label: l.label, strength: 0}));
      renderLatentSliders();
    }
    const before = new Set(result.before.map((d) => d.doc)), after = new Set(result.after.map((d) => d.doc));
    $("search-before").replaceChildren(...result.before.map((d) => docRow(d, "before", !after.has(d.doc))));
    $("search-after").replaceChildren(...result.after.map((d) => docRow(d, "after", !before.has(d.doc))));
  } catch (err) { if (mine === state.searchSeq) showError(err.message); }
}

async function loadLatents(reset) {
  if (reset) { state.latentOffset = 0; $("latent-list").replaceChildren(); }
  const q = $("latent-query").value.trim();
  try {
    const answer = await api(`/api/latents?q=${encodeURIComponent(q)}&limit=${PAGE}&offset=${state.latentOffset}`);
    state.latentOffset += answer.latents.length;
    $("latent-total").textContent = `${answer.total} latents${q ? " matching" : ""}, densest first`;
    $("latent-list").append(...answer.latents.map((l) => el("li", {dataset: {latent: l.latent}, onclick: () => showLatent(l.latent)},
      el("span", {class: "muted", text: `#${l.latent} · ${fmt(100 * l.density, 1)}%`}), l.label || "(no label)")));
    $("latent-more").hidden = state.latentOffset >= answer.total;
  } catch (err) { showError(err.message); }
}

async function showLatent(id) {
  let l;
  try { l = await api(`/api/latents/${id}`); clearError(); } catch (err) { showError(err.message); return; }
  $("latent-detail").replaceChildren(
    el("h2", {text: `Latent ${l.latent}: ${l.label || "(no label)"}`}),
    el("p", {class: "muted", text: `fires on ${fmt(100 * l.density, 1)}% of documents · p90 activation ${fmt(l.p90, 3)}`}),
    el("div", {class: "chips"}, ...l.terms.map((t) => el("span", {class: "chip", text: t}))),
    el("button", {text: "Add as a search slider", onclick: () => { state.latentSliders.set(l.latent, {label: l.label, strength: 0.5}); renderLatentSliders(); showTab("search"); search(); }}),
    el("h3", {text: "Top documents"}),
    el("ol", {}, ...l.top_docs.map((d) => el("li", {}, el("b", {text: d.title}), el("span", {class: "muted", text: ` ${fmt(d.activation, 3)} `}), el("div", {class: "muted", text: d.snippet})))),
    el("div", {class: "columns"},
      el("div", {}, el("h3", {text: "Activation over documents"}), histogram(l.histogram, "documents")),
      el("div", {}, el("h3", {text: "Nearest latents (decoder cosine)"}),
        el("ol", {}, ...l.nearest.map((m) => el("li", {},
          el("a", {class: "link", text: `#${m.latent}`, onclick: () => showLatent(m.latent)}), ` ${fmt(m.cosine, 3)} ${m.label}`))))));
}

async function initText(info) {
  $("model-info").textContent = `${info.model} on ${info.dataset} · ${info.n_docs} documents · ${info.n_live} of ${info.n_latents} latents fire`;
  setupTabs([["search", "Search"], ["latents", "Latents"]]);
  $("search-btn").addEventListener("click", () => search(true));
  $("query-input").addEventListener("keydown", (e) => { if (e.key === "Enter") search(true); });
  $("add-latent-btn").addEventListener("click", async () => {
    const raw = $("add-latent").value;
    if (raw === "") return;
    try {
      const l = await api(`/api/latents/${Number(raw)}`);
      state.latentSliders.set(l.latent, {label: l.label, strength: 0});
      renderLatentSliders();
      $("add-latent").value = "";
      clearError();
    } catch (err) { showError(err.message); }
  });
  $("reset-latents").addEventListener("click", () => { for (const s of state.latentSliders.values()) s.strength = 0; renderLatentSliders(); search(); });
  $("latent-query").addEventListener("input", () => { clearTimeout(state.latentTimer); state.latentTimer = setTimeout(() => loadLatents(true), 150); });
  $("latent-more").addEventListener("click", () => loadLatents(false));
  await loadLatents(true);
}

// ---- start -------------------------------------------------------------------------------------
(async () => {
  try {
    state.info = await api("/api/info");
    if (state.info.kind === "text") await initText(state.info);
    else await initRecommender(state.info);
    document.body.dataset.ready = "1";  // the page has drawn its first answer
  } catch (err) {
    showError(`could not load the explorer: ${err.message}`);
  }
})();
