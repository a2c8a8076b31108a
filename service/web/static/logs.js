// The logs page: the logs API as a table, with its filters, its cursor pages, one entry by
// id (`logs?entry=ID`), and the live tail (newest on top).
"use strict";

(function () {
  const x = window.exstream;
  const KEPT_ROWS = 1000;
  const form = document.getElementById("log-filters");
  const rows = document.getElementById("log-rows");
  const state = document.getElementById("logs-state");
  const older = document.getElementById("older");
  const liveToggle = document.getElementById("live-toggle");
  const FILTERS = ["level", "channel", "since", "until", "q", "trace_id"];
  let cursor = null;
  let tail = null;

  function filters() {
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value) params.set(name, value);
    }
    return params;
  }

  function row(entry) {
    const tr = document.createElement("tr");
    tr.id = "entry-" + entry.id;
    const time = document.createElement("td");
    time.append(x.link("logs?entry=" + encodeURIComponent(entry.id), ""));
    time.firstChild.append(x.timeElement(entry.time, "stamp"));
    time.firstChild.title = "This entry alone (a link to keep)";
    const level = document.createElement("td");
    level.append(x.levelBadge(entry.level));
    const channel = document.createElement("td");
    if (entry.channel) channel.append(x.link("channels/" + encodeURIComponent(entry.channel), entry.channel));
    const message = document.createElement("td");
    message.className = "message";
    message.textContent = entry.message;
    const extra = Object.entries(entry.extra || {});
    if (extra.length) {
      const details = document.createElement("div");
      details.className = "muted";
      details.textContent = extra.map(([k, v]) => k + "=" + (typeof v === "string" ? v : JSON.stringify(v))).join(" ");
      message.append(details);
    }
    const trace = document.createElement("td");
    if (entry.trace_id) trace.append(x.traceLink(entry.trace_id));
    tr.append(time, level, channel, message, trace);
    return tr;
  }

  async function failed(response) {
    x.setText(state, x.refusal(await x.errorOf(response)));
  }

  async function load(more) {
    const params = filters();
    params.set("limit", "100");
    if (more && cursor) params.set("cursor", cursor);
    x.setText(state, "Loading…");
    const response = await x.api("api/logs/entries?" + params.toString());
    if (!response.ok) return failed(response);
    const data = await response.json();
    if (!more) rows.replaceChildren();
    rows.append(...data.entries.map(row));
    cursor = data.next_cursor;
    older.hidden = !cursor;
    x.setText(state, rows.children.length ? rows.children.length + " entries shown, newest first." : "No entries.");
  }

  async function one(id) {
    const response = await x.api("api/logs/entries/" + encodeURIComponent(id));
    if (!response.ok) return failed(response);
    const entry = await response.json();
    const tr = row(entry);
    tr.classList.add("selected");
    rows.replaceChildren(tr);
    x.setText(state, "Entry " + id + ".");
  }

  async function follow(controller) {
    const response = await x.api("api/logs/stream?" + filters().toString(), {
      headers: { Accept: "text/event-stream" }, signal: controller.signal,
    });
    if (!response.ok) return failed(response);
    x.setText(state, "Live: new entries appear on top.");
    await x.readEvents(response, (entry) => {
      rows.prepend(row(entry));
      while (rows.children.length > KEPT_ROWS) rows.lastElementChild.remove();
    });
    x.setText(state, "The live tail ended (the service stopped?).");
  }

  function setLive(on) {
    liveToggle.setAttribute("aria-pressed", String(on));
    if (tail) tail.abort();
    tail = null;
    if (!on) return;
    tail = new AbortController();
    follow(tail).catch(() => {
      if (tail && !tail.signal.aborted) x.setText(state, "The live tail was cut; press Live tail again.");
    });
  }

  function search(event) {
    if (event) event.preventDefault();
    const params = filters();
    history.replaceState(null, "", "logs" + (params.toString() ? "?" + params.toString() : ""));
    load(false).catch(() => x.setText(state, "The service did not answer."));
    if (liveToggle.getAttribute("aria-pressed") === "true") setLive(true);
  }

  form.addEventListener("submit", search);
  older.addEventListener("click", () => load(true).catch(() => x.setText(state, "The service did not answer.")));
  liveToggle.hidden = false;
  liveToggle.addEventListener("click", () => setLive(liveToggle.getAttribute("aria-pressed") !== "true"));
  window.addEventListener("pagehide", () => { if (tail) tail.abort(); });
  document.addEventListener("exstream:token", () => search());

  const entry = new URLSearchParams(location.search).get("entry");
  if (x.access === "off") x.setText(state, x.refusal({ code: "token_required" }));
  else if (x.access === "token" && !x.token()) x.setText(state, x.refusal({ code: "unauthorized" }));
  else if (entry) one(entry).catch(() => x.setText(state, "The service did not answer."));
  else search();
})();
