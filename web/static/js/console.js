// The operator console: live transcripts written into their call as the words arrive, the
// "open its ticket when the call ends" follow, and the keyboard shortcuts shown on the page.
(function () {
  "use strict";
  // A call's live transcript arrives as JSON {seq, text} on "call-<key>"; write its text.
  document.body.addEventListener("htmx:sseBeforeMessage", function (event) {
    var type = event.detail && event.detail.type;
    if (!type || type.indexOf("call-") !== 0) { return; }
    event.preventDefault();
    var target = document.getElementById("live-" + type.slice(5));
    if (!target) { return; }
    try { target.textContent = JSON.parse(event.detail.data).text; } catch (e) { /* keep */ }
  });
  // Follow a call: when the calls block is refreshed and the followed call has ended with a
  // ticket, its ticket form opens.
  var FOLLOW = "hotline.follow";
  document.body.addEventListener("change", function (event) {
    if (event.target.classList && event.target.classList.contains("follow-call")) {
      if (event.target.checked) { sessionStorage.setItem(FOLLOW, event.target.value); }
      else { sessionStorage.removeItem(FOLLOW); }
    }
  });
  function restoreFollow() {
    var followed = sessionStorage.getItem(FOLLOW);
    if (!followed) { return; }
    var box = document.querySelector('.follow-call[value="' + followed + '"]');
    if (box) { box.checked = true; return; }
    var ended = document.querySelector('#calls tr[data-call="' + followed + '"]');
    if (ended && ended.dataset.ticket) {
      sessionStorage.removeItem(FOLLOW);
      window.location.href = "/console/tickets/" + ended.dataset.ticket;
    }
  }
  document.body.addEventListener("htmx:afterSettle", restoreFollow);
  document.addEventListener("DOMContentLoaded", restoreFollow);
  // The final transcript arrived while the ticket form was open: the description the
  // operator has not touched (still the placeholder) becomes the one made from it.
  document.body.addEventListener("htmx:afterSettle", function () {
    var words = document.getElementById("call-words");
    if (!words || !words.dataset.description) { return; }
    var box = document.querySelector('#ticket-form textarea[name="description"]');
    if (box && box.value.trim() === words.dataset.placeholder) {
      box.value = words.dataset.description;
      box.dispatchEvent(new Event("input", { bubbles: true }));
    }
  });
  // Keys: Ctrl+Enter saves the ticket form; Alt+A goes to the direct answer; Alt+D to the
  // duplicates; Alt+N opens a new ticket (accesskey).
  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      var form = document.getElementById("ticket-form");
      if (form) { event.preventDefault(); form.requestSubmit(); }
    } else if (event.altKey && (event.key === "d" || event.key === "D")) {
      var dups = document.getElementById("duplicates");
      if (dups) { event.preventDefault(); dups.scrollIntoView(); var b = dups.querySelector("button"); if (b) { b.focus(); } }
    }
  });
})();
