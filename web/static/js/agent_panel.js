// The agent panel (web/pages/agent_panel.py): asks the page's one live stream for the
// "agents" topic, so that any centre page including the panel hears operators' changes, and
// counts the time in state and the wrap-up's countdown between the server's refreshes.
// The server sends seconds (elapsed, remaining) rather than times: the browser's clock may
// differ from the platform's.
(function () {
  "use strict";
  // Deferred scripts run before DOMContentLoaded, when htmx opens the stream: in time.
  var body = document.body;
  var url = body.getAttribute("sse-connect");
  if (url && !/[=,]agents(,|&|$)/.test(url)) {
    body.setAttribute("sse-connect", url.replace(/topics=([^&]*)/, function (all, topics) {
      return "topics=" + (topics ? topics + ",agents" : "agents");
    }));
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function clock(s) {
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + ":" + pad(m) : String(m)) + ":" + pad(s % 60);
  }
  function passed(el, now) {
    if (!el.dataset.shownAt) { el.dataset.shownAt = String(now); }
    return Math.floor((now - Number(el.dataset.shownAt)) / 1000);
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("#agent-panel [data-elapsed]").forEach(function (el) {
      el.textContent = clock(Number(el.dataset.elapsed) + passed(el, now));
    });
    document.querySelectorAll("#agent-panel [data-remaining]").forEach(function (el) {
      var left = Math.max(0, Number(el.dataset.remaining) - passed(el, now));
      el.textContent = clock(left);
      if (left === 0 && !el.dataset.asked) {  // wrap-up over: the server moves us to ready
        el.dataset.asked = "1";
        htmx.trigger("#agent-panel", "agents-due");
      }
    });
  }
  body.addEventListener("htmx:afterSettle", tick);
  document.addEventListener("DOMContentLoaded", tick);
  window.setInterval(tick, 1000);
})();
