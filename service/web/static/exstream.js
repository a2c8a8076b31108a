// exstream pages: what every page shares. Plain script, no dependencies; the pages are
// complete without it, and it only adds live updates, local times, copy buttons and the
// API token (kept in sessionStorage for this tab: never in a URL, never logged).
"use strict";

(function () {
  const TOKEN_KEY = "exstream-token";
  const body = document.body;
  const root = body.dataset.root || "./";
  // open: the logs API needs no token; token: it and restarts need it; off: refused.
  const access = body.dataset.access || "token";

  function url(path) {
    return new URL(root + path, document.baseURI).toString();
  }

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (error) {
      return "";
    }
  }

  function saveToken(value) {
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (error) {
      // Storage refused (private mode): the token lasts until the page is left.
    }
    document.dispatchEvent(new CustomEvent("exstream:token"));
  }

  // fetch() of the service's API, with the token when there is one, bounded in time.
  async function api(path, options) {
    const settings = options || {};
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), settings.timeout || 10000);
    const headers = Object.assign({ Accept: "application/json" }, settings.headers || {});
    if (token()) headers.Authorization = "Bearer " + token();
    try {
      return await fetch(url(path), {
        method: settings.method || "GET",
        headers: headers,
        body: settings.body,
        signal: settings.signal || controller.signal,
        cache: "no-store",
        credentials: "same-origin",
      });
    } finally {
      clearTimeout(timer);
    }
  }

  async function errorOf(response) {
    try {
      const data = await response.json();
      return { code: data.error || "http_" + response.status, detail: data.detail || "" };
    } catch (error) {
      return { code: "http_" + response.status, detail: response.statusText };
    }
  }

  // Why a request was refused, in words, and whether a token would help.
  function refusal(error) {
    if (error.code === "unauthorized") {
      return token() ? "The API token was refused: enter the right one above." : "This needs the API token: enter it above.";
    }
    if (error.code === "token_required") {
      return "The server is reachable beyond loopback with no API token set, so it serves no log lines.";
    }
    return error.detail || error.code;
  }

  // --- polling, bounded: one request at a time, slower after failures, idle when hidden --

  function poll(task, interval) {
    let delay = interval;
    let timer = null;
    async function run() {
      timer = null;
      if (document.hidden) {
        timer = setTimeout(run, interval);
        return;
      }
      try {
        await task();
        delay = interval;
      } catch (error) {
        delay = Math.min(delay * 2, 30000);
      }
      timer = setTimeout(run, delay);
    }
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && timer !== null) {
        clearTimeout(timer);
        run();
      }
    });
    run();
  }

  // --- times -----------------------------------------------------------------------------

  const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const stampFormat = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });

  function clock(iso) {
    return clockFormat.format(new Date(iso));
  }

  function stamp(iso) {
    return stampFormat.format(new Date(iso));
  }

  function timeElement(iso, format) {
    const element = document.createElement("time");
    element.dateTime = iso;
    element.textContent = format === "stamp" ? stamp(iso) : clock(iso);
    return element;
  }

  function localize(scope) {
    for (const element of (scope || document).querySelectorAll("time[data-clock]")) {
      element.textContent = clock(element.dateTime);
    }
    for (const element of (scope || document).querySelectorAll("time[data-stamp]")) {
      element.textContent = stamp(element.dateTime);
    }
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    const whole = Math.floor(seconds);
    const days = Math.floor(whole / 86400);
    const hours = Math.floor((whole % 86400) / 3600);
    const minutes = Math.floor((whole % 3600) / 60);
    const secs = whole % 60;
    const two = (n) => String(n).padStart(2, "0");
    if (days) return days + " d " + hours + " h";
    if (hours) return hours + " h " + two(minutes) + " min";
    if (minutes) return minutes + " min " + two(secs) + " s";
    return seconds < 10 ? seconds.toFixed(1) + " s" : secs + " s";
  }

  // --- a channel's live fields, wherever the page shows them (data-field) ---------------

  function field(scope, name) {
    return scope.querySelector('[data-field="' + name + '"]');
  }

  function setText(element, text) {
    if (element && element.textContent !== text) element.textContent = text;
  }

  function showState(element, state) {
    if (!element) return;
    const badge = document.createElement("span");
    badge.className = "state state-" + state;
    badge.textContent = state;
    const current = element.firstElementChild;
    if (!current || current.textContent !== state) element.replaceChildren(badge);
  }

  function showProgress(scope, current) {
    const progress = field(scope, "now-progress");
    if (!progress || !current) return;
    const start = Date.parse(current.start);
    const end = Date.parse(current.end);
    progress.max = Math.max((end - start) / 1000, 0.1);
    progress.value = Math.min(Math.max((Date.now() - start) / 1000, 0), progress.max);
  }

  // Whether the programme on air is another than the one shown.
  function programmeChanged(scope, current) {
    const progress = field(scope, "now-progress");
    // Nothing was scheduled when the page was made: the title alone is kept up to date.
    if (!current || !progress) return false;
    return Math.abs(Date.parse(progress.dataset.start) - Date.parse(current.start)) > 1000;
  }

  function showNowNext(scope, entries) {
    const now = entries[0];
    const next = entries[1];
    const title = field(scope, "now-title");
    const progress = field(scope, "now-progress");
    if (now && progress) {
      setText(title, now.title);
      progress.dataset.start = now.start;
      progress.dataset.end = now.end;
      progress.setAttribute("aria-label", "Progress of " + now.title);
      const times = progress.parentElement.querySelector(".times");
      if (times) times.replaceChildren(timeElement(now.start), "–", timeElement(now.end));
      showProgress(scope, now);
    }
    const nextElement = field(scope, "next");
    if (nextElement) {
      if (next) nextElement.replaceChildren(next.title + " at ", timeElement(next.start));
      else nextElement.textContent = "nothing scheduled";
    }
  }

  function showChannel(scope, channel) {
    showState(field(scope, "state"), channel.state);
    setText(field(scope, "viewers"), String(channel.viewers));
    setText(field(scope, "workahead"), channel.workahead_seconds.toFixed(1) + " s");
    setText(field(scope, "restarts"), String(channel.restarts));
    const hour = field(scope, "restarts-hour");
    if (hour) {
      // The count of the last hour when rendered, plus the restarts since.
      if (hour.dataset.base === undefined) hour.dataset.base = hour.textContent;
      const since = channel.restarts - Number(hour.dataset.total);
      setText(hour, String(Number(hour.dataset.base) + Math.max(since, 0)));
    }
    const uptime = field(scope, "uptime");
    if (uptime) setText(uptime, duration(channel.uptime_seconds));
    const failure = field(scope, "failure");
    if (failure) {
      failure.hidden = !channel.failure;
      setText(field(scope, "failure-text"), channel.failure || "");
    }
    if (channel.current) {
      setText(field(scope, "now-title"), channel.current.title);
      if (!programmeChanged(scope, channel.current)) showProgress(scope, channel.current);
    }
  }

  // A restart count from /api/history: the last hour's, at `total` restarts in all.
  function restartBase(scope, lastHour, total) {
    const hour = field(scope, "restarts-hour");
    if (!hour) return;
    hour.dataset.base = String(lastHour);
    hour.dataset.total = String(total);
    setText(hour, String(lastHour));
  }

  // --- charts: the same drawing as the server's (service/web/views.py) ------------------

  const SPARK_WIDTH = 120;
  const SPARK_HEIGHT = 24;
  const SVG = "http://www.w3.org/2000/svg";

  function polylines(values, points) {
    const known = values.filter((v) => v !== null);
    const top = Math.max(0, ...known) || 1;
    const step = SPARK_WIDTH / Math.max(points - 1, 1);
    const offset = points - values.length;
    const lines = [];
    let run = [];
    values.forEach((value, position) => {
      if (value === null) {
        if (run.length > 1) lines.push(run.join(" "));
        run = [];
        return;
      }
      const x = (offset + position) * step;
      const y = SPARK_HEIGHT - (value / top) * SPARK_HEIGHT;
      run.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    if (run.length > 1) lines.push(run.join(" "));
    return lines;
  }

  function bitRate(bits) {
    const units = [["Gbit/s", 1e9], ["Mbit/s", 1e6], ["kbit/s", 1e3]];
    for (const [unit, scale] of units) {
      if (bits >= scale) return (bits / scale).toFixed(1) + " " + unit;
    }
    return bits.toFixed(0) + " bit/s";
  }

  function draw(svg, values, points, label) {
    if (!svg) return;
    svg.replaceChildren(...polylines(values, points).map((line) => {
      const polyline = document.createElementNS(SVG, "polyline");
      polyline.setAttribute("points", line);
      return polyline;
    }));
    svg.setAttribute("aria-label", label);
  }

  function showCharts(scope, series, points) {
    const rates = series.output_bits_per_second.filter((v) => v !== null);
    const latest = rates.length ? bitRate(rates[rates.length - 1]) : "no data yet";
    const peak = rates.length ? bitRate(Math.max(...rates)) : "none";
    draw(scope.querySelector('[data-chart="output rate"]'), series.output_bits_per_second, points,
      "Output rate over the last hour: " + latest + ", peak " + peak);
    const viewers = series.viewers;
    draw(scope.querySelector('[data-chart="viewers"]'), viewers, points,
      "Viewers over the last hour: " + (viewers.length ? viewers[viewers.length - 1] : 0) +
      ", at most " + Math.max(0, ...viewers));
    const restarts = series.restarts.map((v) => v || 0);
    draw(scope.querySelector('[data-chart="restarts"]'), restarts, points,
      "Restarts over the last hour: " + restarts.reduce((a, b) => a + b, 0));
  }

  // --- a log entry, as the logs API gives it --------------------------------------------

  function levelBadge(level) {
    const badge = document.createElement("span");
    badge.className = "level level-" + level.toLowerCase();
    badge.textContent = level;
    return badge;
  }

  function link(href, text, className) {
    const anchor = document.createElement("a");
    anchor.href = url(href);
    anchor.textContent = text;
    if (className) anchor.className = className;
    return anchor;
  }

  function traceLink(traceId) {
    const anchor = link("logs?trace_id=" + encodeURIComponent(traceId), "", "trace");
    const code = document.createElement("code");
    code.textContent = traceId;
    anchor.append(code);
    return anchor;
  }

  // --- the page's chrome: copy buttons, the token form ----------------------------------

  function setUpCopy() {
    for (const button of document.querySelectorAll("button.copy[data-copy]")) {
      const input = document.getElementById(button.dataset.copy);
      if (!input) continue;
      button.hidden = false;
      button.addEventListener("click", async () => {
        let copied = false;
        try {
          await navigator.clipboard.writeText(input.value);
          copied = true;
        } catch (error) {
          // No clipboard API (plain http beyond localhost): the selection is the copy.
          input.select();
          copied = document.execCommand("copy");
        }
        button.textContent = copied ? "Copied" : "Selected";
        setTimeout(() => { button.textContent = "Copy"; }, 2000);
      });
    }
  }

  function setUpToken() {
    const form = document.getElementById("token-form");
    if (!form || access !== "token") return;
    const input = document.getElementById("token-input");
    const state = document.getElementById("token-state");
    const show = () => { state.textContent = token() ? "Token set for this tab." : "No token."; };
    form.hidden = false;
    show();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      saveToken(input.value.trim());
      input.value = "";
      show();
    });
    document.getElementById("token-forget").addEventListener("click", () => {
      saveToken("");
      show();
    });
  }

  function setUpUptime() {
    const element = document.getElementById("uptime");
    if (!element) return;
    const loaded = Date.now();
    const base = Number(element.dataset.seconds);
    setInterval(() => setText(element, duration(base + (Date.now() - loaded) / 1000)), 1000);
  }

  // The logs API's live tail (server-sent events) read from a fetch() response, which can
  // carry the token (EventSource cannot): `onEntry` gets each entry until the stream ends.
  async function readEvents(response, onEntry) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim());
        if (data.length) onEntry(JSON.parse(data.join("\n")));
      }
    }
  }

  window.exstream = {
    access, url, api, token, errorOf, refusal, poll, clock, stamp, timeElement, localize,
    duration, field, setText, showChannel, programmeChanged, showNowNext, restartBase,
    showCharts, levelBadge, link, traceLink, readEvents,
  };

  localize(document);
  setUpCopy();
  setUpToken();
  setUpUptime();
})();
