// The page's one live stream (web/live.py): htmx's SSE extension opens it from the body's
// sse-connect; this keeps the id of the last event seen, so that when the extension has to
// open a new EventSource (after the browser gave up on the old one) the server is told where
// to resume (?last_event_id=) — the browser's own reconnects send Last-Event-ID themselves.
// The first connect resumes from where the page was read (base.html's ?last_event_id=), so
// a change made while the page loaded is replayed to it.
(function () {
  "use strict";
  var lastId = null;
  function track(event) {
    if (event && event.lastEventId) { lastId = event.lastEventId; }
  }
  htmx.createEventSource = function (url) {
    if (lastId) {
      // newer than the position the page was rendered at (base.html), which it replaces
      url = url.replace(/([?&])last_event_id=[^&]*(&|$)/, function (all, lead, tail) {
        return tail ? lead : "";
      });
      url += (url.indexOf("?") < 0 ? "?" : "&") + "last_event_id=" + encodeURIComponent(lastId);
    }
    var source = new EventSource(url, { withCredentials: true });
    var add = source.addEventListener.bind(source);
    source.addEventListener = function (type, listener, options) {
      return add(type, function (event) { track(event); return listener(event); }, options);
    };
    ["hello", "nav", "tickets", "escalations"].forEach(function (name) { add(name, track); });
    add("reset", function () { window.location.reload(); });
    add("signed-out", function () { window.location.reload(); });
    return source;
  };
})();

// Live regions refresh with hx-trigger="sse:<topic> throttle:<t>". htmx's throttle drops an
// event that comes within <t> of the one that refreshed the region — it does not defer it —
// so a second change close behind a first would leave the region showing only the first
// until some later event. An event dropped that way is sent again as soon as the window is
// over (one pending per region and topic): the region always ends showing the last change,
// and a busy topic still refreshes it at most once per window.
(function () {
  "use strict";
  var fired = new WeakMap();  // region -> when htmx last refreshed it
  var pending = {};  // "<region id>|<topic>" -> timer
  document.addEventListener("htmx:trigger", function (e) {
    fired.set(e.target, Date.now());
  }, true);
  function windowMs(elt, topic) {
    var spec = elt.getAttribute("hx-trigger") || "";
    var escaped = topic.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");
    var m = spec.match(new RegExp("sse:" + escaped + "\\s+throttle:(\\d+)(ms|s)\\b"));
    if (!m) { return 0; }
    return m[2] === "s" ? 1000 * Number(m[1]) : Number(m[1]);
  }
  document.addEventListener("htmx:sseMessage", function (e) {
    var elt = e.target, topic = e.detail && e.detail.type;
    if (!topic || !elt.id) { return; }
    var every = windowMs(elt, topic);
    if (!every) { return; }
    // htmx refreshed the region in this very dispatch (it fires before this message is
    // told): nothing was dropped. Any doubt costs one refresh more, never one less.
    var last = fired.get(elt) || 0;
    if (Date.now() - last <= 5) { return; }
    var key = elt.id + "|" + topic;
    if (pending[key]) { return; }
    pending[key] = setTimeout(function () {
      delete pending[key];
      var region = document.getElementById(elt.id);  // swapped outerHTML: the new one
      if (region) { htmx.trigger(region, "sse:" + topic, {}); }
    }, Math.max(0, last + every + 20 - Date.now()));
  }, true);
})();
