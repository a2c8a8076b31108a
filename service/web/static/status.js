// The status page, live: channels every 2 s (/api/channels), the coming programme when
// one ends, the charts every 30 s (/api/history), the last problems every 15 s (logs API).
"use strict";

(function () {
  const x = window.exstream;
  const CHANNELS_EVERY = 2000;
  const HISTORY_EVERY = 30000;
  const PROBLEMS_EVERY = 15000;
  const SCHEDULES_PER_ROUND = 10; // programme changes looked up per update, at most
  const rows = new Map();
  for (const row of document.querySelectorAll("tr[data-channel]")) rows.set(row.dataset.channel, row);
  const live = document.getElementById("live");
  const changed = new Set(); // channels whose programme on air is not the one shown

  async function nowAndNext(number) {
    const response = await x.api("api/channels/" + number + "/schedule");
    if (!response.ok) return;
    const data = await response.json();
    x.showNowNext(rows.get(String(number)), data.entries);
    changed.delete(String(number));
  }

  async function channels() {
    let response;
    try {
      response = await x.api("api/channels");
    } catch (error) {
      x.setText(live, "Not updating: the service does not answer. Trying again.");
      throw error;
    }
    if (!response.ok) {
      x.setText(live, "Not updating: " + x.refusal(await x.errorOf(response)));
      throw new Error("channels " + response.status);
    }
    const data = await response.json();
    for (const channel of data.channels) {
      const row = rows.get(String(channel.number));
      if (!row) continue;
      x.showChannel(row, channel);
      if (x.programmeChanged(row, channel.current)) changed.add(String(channel.number));
    }
    for (const number of Array.from(changed).slice(0, SCHEDULES_PER_ROUND)) {
      await nowAndNext(number);
    }
    live.replaceChildren("Live: updated at ", x.timeElement(new Date().toISOString(), "stamp"), ".");
  }

  async function history() {
    const response = await x.api("api/history");
    if (!response.ok) throw new Error("history " + response.status);
    const data = await response.json();
    for (const channel of data.channels) {
      const row = rows.get(String(channel.number));
      if (!row) continue;
      x.showCharts(row, channel, data.points);
      x.restartBase(row, channel.restarts_last_hour, channel.restarts_total);
    }
  }

  function showProblem(row, entry) {
    const box = x.field(row, "problem");
    if (!box) return;
    const head = document.createElement("p");
    head.append(x.levelBadge(entry.level), " ", x.timeElement(entry.time, "stamp"));
    if (entry.extra && typeof entry.extra.reason === "string") head.append(" · " + entry.extra.reason);
    const message = document.createElement("p");
    message.className = "message";
    message.textContent = entry.message;
    box.replaceChildren(head, message);
    const links = row.querySelector(".links");
    if (links) {
      const parts = [
        x.link("logs?channel=" + row.dataset.channel + "&level=WARNING", "log lines"), " · ",
        x.link("logs?entry=" + encodeURIComponent(entry.id), "this entry"),
      ];
      if (entry.trace_id) parts.push(" · trace ", x.traceLink(entry.trace_id));
      links.replaceChildren(...parts);
    }
  }

  let problemsOff = false;
  async function problems() {
    if (problemsOff || (x.access === "token" && !x.token())) return;
    const response = await x.api("api/logs/entries?level=WARNING&limit=500");
    if (!response.ok) {
      // Refused: not again until a token is entered.
      problemsOff = true;
      return;
    }
    const data = await response.json();
    const seen = new Set();
    for (const entry of data.entries) { // newest first
      if (entry.channel === null || seen.has(entry.channel)) continue;
      seen.add(entry.channel);
      const row = rows.get(entry.channel);
      if (row) showProblem(row, entry);
    }
  }

  document.addEventListener("exstream:token", () => { problemsOff = false; });
  x.poll(channels, CHANNELS_EVERY);
  x.poll(history, HISTORY_EVERY);
  if (x.access !== "off") x.poll(problems, PROBLEMS_EVERY);
})();
