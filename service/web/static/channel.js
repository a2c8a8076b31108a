// One channel's page, live: its status every 2 s, the schedule when a programme ends, the
// restart action, and its log lines as they are written (the logs API's tail).
"use strict";

(function () {
  const x = window.exstream;
  const STATUS_EVERY = 2000;
  const HISTORY_EVERY = 30000;
  const KEPT_LINES = 200;
  const RECENT_LINES = 20;
  const box = document.querySelector("[data-channel]");
  const number = box.dataset.channel;

  // --- status and schedule ---------------------------------------------------------------

  function showSchedule(entries) {
    const body = document.querySelector("#schedule tbody");
    const rows = entries.map((entry) => {
      const row = document.createElement("tr");
      for (const value of [x.timeElement(entry.start), x.timeElement(entry.end), entry.title]) {
        const cell = document.createElement("td");
        cell.append(value);
        row.append(cell);
      }
      return row;
    });
    if (rows.length) body.replaceChildren(...rows);
  }

  async function status() {
    const response = await x.api("api/channels/" + number);
    if (!response.ok) throw new Error("channel " + response.status);
    const channel = await response.json();
    x.showChannel(document, channel);
    if (x.programmeChanged(document, channel.current)) {
      const schedule = await x.api("api/channels/" + number + "/schedule");
      if (schedule.ok) {
        const data = await schedule.json();
        x.showNowNext(document, data.entries);
        showSchedule(data.entries);
      }
    }
  }

  async function history() {
    const response = await x.api("api/history");
    if (!response.ok) throw new Error("history " + response.status);
    const data = await response.json();
    const series = data.channels.find((c) => String(c.number) === number);
    if (!series) return;
    x.showCharts(document, series, data.points);
    x.restartBase(document, series.restarts_last_hour, series.restarts_total);
  }

  // --- restart ---------------------------------------------------------------------------

  function setUpRestart() {
    const form = document.getElementById("restart-form");
    const result = document.getElementById("restart-result");
    form.hidden = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = form.querySelector("button");
      button.disabled = true;
      x.setText(result, "Asking…");
      try {
        // JSON: a request no other site's page can make without a preflight.
        const response = await x.api("api/channels/" + number + "/restart", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: "{}",
        });
        if (response.ok) {
          const data = await response.json();
          x.setText(result, data.action === "reset" ? "Channel reset." : "Restart requested.");
        } else {
          x.setText(result, x.refusal(await x.errorOf(response)));
        }
      } catch (error) {
        x.setText(result, "The service did not answer.");
      } finally {
        button.disabled = false;
      }
    });
  }

  // --- the log panel: the latest lines, then the live tail --------------------------------

  const lines = document.getElementById("log-lines");
  const logState = document.getElementById("log-state");
  const level = document.getElementById("log-level");
  const pause = document.getElementById("log-pause");
  let tail = null; // the AbortController of the tail under way
  let lastId = null;
  let paused = false;
  let retry = 1000;

  function addLine(entry) {
    const item = document.createElement("p");
    item.className = "line";
    item.append(x.timeElement(entry.time, "stamp"), x.levelBadge(entry.level), " ", entry.message);
    if (entry.trace_id) item.append(" ", x.traceLink(entry.trace_id));
    lines.append(item);
    while (lines.children.length > KEPT_LINES) lines.firstElementChild.remove();
    if (!paused) lines.scrollTop = lines.scrollHeight;
    lastId = entry.id;
  }

  function query() {
    return "channel=" + encodeURIComponent(number) + "&level=" + encodeURIComponent(level.value);
  }

  async function refused(response) {
    const error = await x.errorOf(response);
    x.setText(logState, x.refusal(error));
    // A token may come; a server without one will not change its mind.
    return error.code !== "token_required";
  }

  async function recent() {
    const response = await x.api("api/logs/entries?limit=" + RECENT_LINES + "&" + query());
    if (!response.ok) return false;
    const data = await response.json();
    lines.replaceChildren();
    lastId = null;
    for (const entry of data.entries.reverse()) addLine(entry);
    return true;
  }

  // Server-sent events read through fetch(), which can send the token (EventSource cannot).
  async function follow(controller) {
    const headers = { Accept: "text/event-stream" };
    if (lastId) headers["Last-Event-ID"] = lastId;
    const response = await x.api("api/logs/stream?" + query(), {
      headers: headers, signal: controller.signal,
    });
    if (!response.ok) {
      if (response.status === 503) throw new Error("busy");
      if (await refused(response)) throw new Error("refused");
      return;
    }
    x.setText(logState, "Live.");
    retry = 1000;
    await x.readEvents(response, addLine);
    throw new Error("ended");
  }

  async function startTail() {
    if (tail) tail.abort();
    const controller = new AbortController();
    tail = controller;
    if (x.access === "off") {
      x.setText(logState, x.refusal({ code: "token_required" }));
      return;
    }
    if (x.access === "token" && !x.token()) {
      x.setText(logState, x.refusal({ code: "unauthorized" }));
      return;
    }
    try {
      if (!(await recent())) throw new Error("recent");
    } catch (error) {
      if (!controller.signal.aborted) setTimeout(startTail, retry);
      retry = Math.min(retry * 2, 30000);
      return;
    }
    while (!controller.signal.aborted) {
      try {
        await follow(controller);
        return; // refused for good
      } catch (error) {
        if (controller.signal.aborted) return;
        x.setText(logState, "Reconnecting…");
        await new Promise((resolve) => setTimeout(resolve, retry));
        retry = Math.min(retry * 2, 30000);
      }
    }
  }

  function setUpLog() {
    document.getElementById("log-controls").hidden = false;
    level.addEventListener("change", startTail);
    pause.addEventListener("click", () => {
      paused = !paused;
      pause.setAttribute("aria-pressed", String(paused));
      pause.textContent = paused ? "Resume scrolling" : "Pause";
    });
    document.addEventListener("exstream:token", startTail);
    window.addEventListener("pagehide", () => { if (tail) tail.abort(); });
    startTail();
  }

  setUpRestart();
  setUpLog();
  x.poll(status, STATUS_EVERY);
  x.poll(history, HISTORY_EVERY);
})();
