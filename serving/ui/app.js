// The explorer page: calls the service's own JSON endpoints (/explore, /explore/info, /explore/items, /search,
// /similar, /events) and draws what each stage did. Plain DOM, no framework, no network beyond this service.
"use strict";

const $ = (id) => document.getElementById(id);
let lastExploration = null;
let lastRequest = null;
let asked = 0; // the number of the latest /explore request: an older answer arriving late is not drawn

// ---- small DOM helpers (textContent only: item titles are data, never markup) ----
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "testid") node.dataset.testid = value;
    else if (key === "onclick") node.addEventListener("click", (event) => { event.preventDefault(); value(event); });
    else if (key === "width") node.style.width = value; // CSSOM, not a style attribute: the page's CSP allows no inline styles
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const price = (value) => (value === null || value === undefined ? "price unknown" : value.toFixed(2));

function status(message, isError = false) {
  $("status").textContent = message;
  $("status").classList.toggle("error", isError);
}

// ---- the service's endpoints ----
async function post(path, body, admin = false) {
  const headers = { "Content-Type": "application/json" };
  const token = $("token").value.trim();
  if (admin && token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}: ${describeError(data)}`);
  return data;
}

function describeError(data) {
  if (data === null || data === undefined) return "no details";
  if (typeof data === "string") return data;
  if (Array.isArray(data)) return data.map(describeError).join("; ");
  const detail = Array.isArray(data.detail)
    ? data.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ")
    : data.detail;
  return [data.error, detail].filter(Boolean).join(" — ") || JSON.stringify(data);
}

// ---- what the user asked for ----
function currentRequest() {
  const filters = {};
  const category = $("category").value;
  if (category) filters.categories = [category];
  const maxPrice = $("max-price").value;
  if (maxPrice !== "") filters.max_price = Number(maxPrice);
  return {
    user_id: $("user").value.trim(),
    k: Number($("k").value) || 10,
    filters,
    exclude_seen: $("exclude-seen").checked,
    per_source: 10,
  };
}

async function explore(note = null, request = currentRequest()) {
  if (!request.user_id) { status("Enter a user id (or pick an example user).", true); return; }
  if (!$("token").value.trim()) {
    $("admin").open = true;
    status("The explorer shows a user's history: enter the service's admin token (RECSYS_ADMIN_TOKEN) above.", true);
    return;
  }
  const mine = ++asked;
  status(`Asking /explore for ${request.user_id}…`);
  try {
    const exploration = await post("/explore", request, true);
    if (mine !== asked) return; // a newer request was sent meanwhile: its answer is the one to show
    const before = lastExploration && lastRequest && lastRequest.user_id === request.user_id ? lastExploration : null;
    lastExploration = exploration;
    lastRequest = request;
    render(exploration);
    showChange(note, before, exploration);
    const who = exploration.fallback ? "unknown user: popular and fresh items (fallback)"
      : exploration.degraded ? "online store unavailable: stage-1 order (degraded)"
      : `${exploration.history.length} recent items`;
    status(`${exploration.results.length} items for ${exploration.user_id} — ${who}.`);
  } catch (error) {
    if (mine === asked) status(error.message, true);
  }
}

// ---- drawing ----
function itemLine(item) {
  const stock = item.in_stock ? null : el("span", { class: "out-of-stock" }, " · out of stock");
  return [
    el("a", { class: "title", href: "#", title: `items similar to ${item.item_id}`, onclick: () => similar(item) }, item.title),
    el("div", { class: "meta" }, `${item.item_id} · ${item.category} · ${price(item.price)}`, stock),
  ];
}

function render(exploration) {
  for (const id of ["summary", "history-panel", "results-panel", "candidates-panel"]) $(id).hidden = false;
  renderRules(exploration);
  renderTimings(exploration.timings_ms);
  renderHistory(exploration.history);
  renderResults(exploration);
  renderCandidates(exploration);
}

function renderRules(exploration) {
  const rules = $("rules");
  rules.replaceChildren(el("span", {}, `Served by ${exploration.version} (${exploration.variant}) · rules fired:`));
  const names = { filtered_out: "filtered out", freshness_boosted: "freshness-boosted", category_capped: "category-capped" };
  const entries = Object.entries(exploration.rules);
  if (!entries.length) rules.append(el("span", { class: "chip" }, "none"));
  for (const [name, count] of entries) rules.append(el("span", { class: "chip" }, `${names[name] || name}: ${count}`));
}

function renderTimings(timings) {
  const box = $("timings");
  const total = Object.values(timings).reduce((a, b) => a + b, 0);
  box.replaceChildren(el("span", {}, `Timings (${total.toFixed(1)} ms):`));
  for (const [stage, ms] of Object.entries(timings)) {
    const width = Math.max(2, Math.round((120 * ms) / Math.max(total, 1e-9)));
    box.append(el("span", { class: "timing" }, el("span", { class: "bar", width: `${width}px` }),
      `${stage} ${ms.toFixed(1)} ms`));
  }
}

function renderHistory(history) {
  const list = $("history");
  list.replaceChildren();
  if (!history.length) list.append(el("li", { class: "meta" }, "no history: a new visitor"));
  for (const item of history) {
    list.append(el("li", { testid: "history-item" }, ...itemLine(item), el("div", { class: "meta" }, item.at.slice(0, 16).replace("T", " "))));
  }
}

function movement(item) {
  if (item.stage1_rank === null) return el("span", { class: "move new" }, "added by the rules");
  const text = `stage 1 #${item.stage1_rank + 1}`;
  if (item.movement > 0) return el("span", { class: "move up" }, `▲ ${item.movement} (${text})`);
  if (item.movement < 0) return el("span", { class: "move down" }, `▼ ${-item.movement} (${text})`);
  return el("span", { class: "move" }, `= (${text})`);
}

function renderResults(exploration) {
  $("results-k").textContent = String(exploration.results.length);
  const list = $("results");
  list.replaceChildren();
  const explain = $("explain").checked;
  const scale = Math.max(1e-9, ...exploration.results.flatMap((r) => Object.values(r.top_features).map(Math.abs)));
  for (const item of exploration.results) {
    const row = el("li", { testid: "result-item", "data-item-id": item.item_id, "data-category": item.category },
      ...itemLine(item),
      el("div", { class: "meta" }, `score ${item.score.toFixed(4)}`, movement(item)),
      el("div", {}, ...Object.entries(item.sources).map(([name, s]) => el("span", { class: "chip" }, `${name} #${s.rank + 1}`))));
    if (explain && Object.keys(item.top_features).length) {
      const features = el("div", { class: "features", testid: "contributions" });
      for (const [name, value] of Object.entries(item.top_features)) {
        const width = Math.max(2, Math.round((100 * Math.abs(value)) / scale));
        features.append(el("span", {}, `${name} ${value >= 0 ? "+" : ""}${value.toFixed(3)}`),
          el("span", { class: `bar ${value >= 0 ? "pos" : "neg"}`, width: `${width}px` }));
      }
      row.append(features);
    }
    row.append(el("div", { class: "actions" },
      el("button", { class: "small", type: "button", testid: "event-click", onclick: () => record(item, "click") }, "record click"),
      el("button", { class: "small", type: "button", testid: "event-purchase", onclick: () => record(item, "purchase") }, "record purchase")));
    list.append(row);
  }
}

function renderCandidates(exploration) {
  const stage1 = exploration.stage1;
  $("candidates-summary").textContent =
    `(${stage1.retrieved} merged of K = ${stage1.k_candidates}; the best 10 of each source; green: in the final list)`;
  const table = $("candidates");
  for (const body of [...table.tBodies]) body.remove();
  const served = new Set(exploration.results.map((r) => r.item_id));
  for (const [source, candidates] of Object.entries(stage1.sources)) {
    const body = el("tbody", { testid: "source", "data-source": source });
    body.append(el("tr", { class: "source-head" }, el("td", { colspan: "7" }, source)));
    for (const c of candidates) {
      body.append(el("tr", { class: served.has(c.item_id) ? "served" : "", testid: "candidate" },
        el("td", {}, source), el("td", {}, c.rank + 1),
        el("td", {}, el("a", { href: "#", onclick: () => similar(c) }, c.title)),
        el("td", {}, c.category), el("td", {}, price(c.price)), el("td", {}, c.score.toFixed(4)),
        el("td", {}, c.fused_rank + 1)));
    }
    table.append(body);
  }
}

function showChange(note, before, after) {
  const box = $("change-note");
  if (!note || !before) { box.hidden = true; return; }
  const old = new Set(before.results.map((r) => r.item_id));
  const now = new Set(after.results.map((r) => r.item_id));
  const left = [...old].filter((id) => !now.has(id)).length;
  const entered = [...now].filter((id) => !old.has(id)).length;
  const moved = after.results.filter((r, i) => before.results[i] && before.results[i].item_id !== r.item_id).length;
  box.textContent = `${note}: ${left} item(s) left the list, ${entered} entered, ${moved} position(s) changed.`;
  box.hidden = false;
}

// ---- live events, search, similar items ----
async function record(item, eventType) {
  if (!$("token").value.trim()) {
    $("admin").open = true;
    status("Recording events needs the service's admin token (RECSYS_ADMIN_TOKEN): enter it above.", true);
    return;
  }
  try {
    await post("/events", { events: [{ user_id: lastExploration.user_id, item_id: item.item_id, event_type: eventType }] }, true);
    await explore(`after a ${eventType} of “${item.title}”`, lastRequest); // the list the event was recorded on
  } catch (error) {
    status(error.message, true);
  }
}

async function decorated(items) {
  if (!items.length) return [];
  const described = await post("/explore/items", { item_ids: items.map((i) => i.item_id) });
  const byId = new Map(described.map((d) => [d.item_id, d]));
  return items.map((i) => ({ ...(byId.get(i.item_id) || { item_id: i.item_id, title: i.item_id, category: "?", price: null, in_stock: true }), score: i.score }));
}

function renderItems(list, items, testid) {
  list.replaceChildren();
  if (!items.length) list.append(el("li", { class: "meta" }, "nothing found"));
  for (const item of items) list.append(el("li", { testid, "data-item-id": item.item_id, "data-category": item.category }, ...itemLine(item)));
}

async function search(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  const body = { query, k: 10 };
  const user = $("user").value.trim();
  if (user) body.user_id = user;
  try {
    const answer = await post("/search", body);
    renderItems($("search-results"), await decorated(answer.items), "search-item");
    status(`search “${query}”: ${answer.items.length} items${user ? `, re-ranked for ${user}` : ""}.`);
  } catch (error) {
    status(error.message, true);
  }
}

async function similar(item) {
  try {
    const answer = await post("/similar", { item_id: item.item_id, k: 10 });
    $("similar-title").textContent = `${item.title} (${item.item_id})`;
    renderItems($("similar"), await decorated(answer.items), "similar-item");
    $("similar-panel").hidden = false;
    $("similar-panel").scrollIntoView({ block: "nearest" });
  } catch (error) {
    status(error.message, true);
  }
}

// ---- start ----
function tokenFromAddress() {
  // `make demo` prints the page's address with #token=…: a fragment never reaches a server or its logs; it is
  // moved into this tab's storage and taken out of the address bar at once.
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (token) {
    sessionStorage.setItem("recsys-admin-token", token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

async function start() {
  tokenFromAddress();
  $("token").value = sessionStorage.getItem("recsys-admin-token") || "";
  $("token").addEventListener("change", () => sessionStorage.setItem("recsys-admin-token", $("token").value));
  $("request").addEventListener("submit", (event) => { event.preventDefault(); explore(); });
  $("search-form").addEventListener("submit", search);
  for (const id of ["category", "exclude-seen"]) $(id).addEventListener("change", () => { if (lastExploration) explore(); });
  $("explain").addEventListener("change", () => { if (lastExploration) renderResults(lastExploration); });
  try {
    const info = await post("/explore/info", {});
    $("served").textContent = `${info.dataset} · namespace ${info.namespace} · version ${info.version} · ${info.items} items · K = ${info.k_candidates}`;
    for (const category of info.categories) $("category").append(el("option", { value: category }, category));
    for (const user of info.example_users) {
      $("examples").append(el("button", { type: "button", testid: "example-user", onclick: () => { $("user").value = user; explore(); } }, user));
    }
    const wanted = new URLSearchParams(location.search).get("user");
    if (wanted) { $("user").value = wanted; explore(); }
  } catch (error) {
    status(error.message, true);
  }
}

start();
