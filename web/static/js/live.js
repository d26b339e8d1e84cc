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
