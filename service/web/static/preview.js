// The channel page's preview: the channel's HLS in a muted <video>, played by the browser
// where it knows HLS (Safari), else by the bundled hls.js, loaded only then. A channel
// that is not running starts only when someone presses play: a preview is a viewer.
"use strict";

(function () {
  const video = document.getElementById("preview-video");
  if (!video) return;
  const box = video.closest("[data-hls]");
  const url = box.dataset.hls;
  const RETRY_MS = 2000;
  let started = false;

  function play() {
    video.play().catch(() => {}); // a browser may refuse autoplay: the controls remain
  }

  function withHlsJs() {
    const Hls = window.Hls;
    if (!Hls || !Hls.isSupported()) {
      video.replaceWith(Object.assign(document.createElement("p"), {
        textContent: "This browser cannot play HLS.",
      }));
      return;
    }
    // No worker: the page's CSP allows scripts of this service only.
    const hls = new Hls({ enableWorker: false });
    hls.on(Hls.Events.MANIFEST_PARSED, play);
    hls.on(Hls.Events.ERROR, (event, data) => {
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
      else setTimeout(() => hls.startLoad(), RETRY_MS); // e.g. 503 while the channel starts
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  }

  function loadHlsJs() {
    const script = document.createElement("script");
    script.src = box.dataset.hlsjs;
    script.addEventListener("load", withHlsJs);
    document.head.append(script);
  }

  function start() {
    if (started) return;
    started = true;
    if (!video.canPlayType("application/vnd.apple.mpegurl")) {
      loadHlsJs();
      return;
    }
    // Some browsers say they play HLS and then cannot parse it: hls.js takes over.
    video.addEventListener("error", () => {
      video.removeAttribute("src");
      video.load();
      loadHlsJs();
    }, { once: true });
    video.src = url;
    play();
  }

  if (box.dataset.autoplay === "true") start();
  else video.addEventListener("play", start, { once: true });
})();
