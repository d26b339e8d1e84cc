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
  // Knowledge suggestions: the list follows the caller's words, except while the operator
  // works in it — a suggestion open (being read out), or the focus in the card (typing a
  // note): then the live refresh waits for the next words. A search the operator types
  // always runs, and keeps an opened suggestion open. "Answer with this article" fills the
  // direct answer and cites the article's version; Alt+Enter does that and closes at intake.
  var openArticle = null;
  document.body.addEventListener("toggle", function (event) {
    var hit = event.target.closest && event.target.closest(".kb-hit");
    if (hit && event.target.tagName === "DETAILS" && event.target.open) { openArticle = hit.dataset.article; }
  }, true);
  function kbBusy() {
    var card = document.getElementById("kb-suggest");
    if (!card) { return false; }
    var active = document.activeElement;
    return (active && active.id !== "kb-q" && card.contains(active)) ||
      card.querySelector("#kb-results details[open]") !== null;
  }
  document.body.addEventListener("htmx:beforeRequest", function (event) {
    if (event.detail.elt.id === "kb-live" && kbBusy()) { event.preventDefault(); }
  });
  // …and an answer already on its way when the operator started is dropped: a live one while
  // they read or type in the card, even their own search while they write a note.
  function writingNote() {
    var active = document.activeElement;
    if (active && active.closest && active.closest(".kb-feedback")) { return true; }
    return Array.prototype.some.call(
      document.querySelectorAll('#kb-results input[name="note"]'),
      function (input) { return input.value.trim() !== ""; });
  }
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    var elt = event.detail.elt;
    if (!elt) { return; }
    if ((elt.id === "kb-live" && kbBusy()) || (elt.id === "kb-q" && writingNote())) {
      event.detail.shouldSwap = false;
    }
  });
  document.body.addEventListener("htmx:afterSettle", function () {
    if (!openArticle) { return; }
    var hit = document.querySelector('.kb-hit[data-article="' + openArticle + '"] details');
    if (hit && !hit.open) { hit.open = true; }
  });
  function openSuggestion(n) {
    var details = document.getElementById("kb-" + n);
    if (!details) { return false; }
    document.querySelectorAll(".kb-hit details").forEach(function (d) { if (d !== details) { d.open = false; } });
    details.open = true;
    openArticle = details.closest(".kb-hit").dataset.article;
    details.scrollIntoView({ block: "nearest" });
    var summary = details.querySelector("summary");
    if (summary) { summary.focus(); }
    return true;
  }
  function cite(hit) {
    var form = document.getElementById("answer-form");
    if (!form || !hit) { return null; }
    form.querySelector('input[name="article_id"]').value = hit.dataset.article;
    form.querySelector('input[name="version"]').value = hit.dataset.version;
    form.querySelector('textarea[name="answer"]').value = hit.querySelector(".kb-answer").textContent.trim();
    var citing = form.querySelector(".kb-citing");
    citing.querySelector(".kb-citing-name").textContent = hit.dataset.number + " v" + hit.dataset.version;
    citing.hidden = false;
    return form;
  }
  document.body.addEventListener("click", function (event) {
    var use = event.target.closest && event.target.closest(".kb-use");
    if (use) {
      var form = cite(use.closest(".kb-hit"));
      if (form) { form.querySelector('textarea[name="answer"]').focus(); }
      return;
    }
    var uncite = event.target.closest && event.target.closest(".kb-uncite");
    if (uncite) {
      var answer = document.getElementById("answer-form");
      answer.querySelector('input[name="article_id"]').value = "";
      answer.querySelector('input[name="version"]').value = "";
      answer.querySelector(".kb-citing").hidden = true;
    }
  });
  // Keys: Ctrl+Enter saves the ticket form; Alt+A goes to the direct answer; Alt+1 … Alt+5
  // open a knowledge suggestion and Alt+Enter answers with the open one; Alt+D goes to the
  // duplicates; Alt+N opens a new ticket (accesskey).
  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      var form = document.getElementById("ticket-form");
      if (form) { event.preventDefault(); form.requestSubmit(); }
    } else if (event.altKey && event.key >= "1" && event.key <= "5") {
      if (openSuggestion(event.key)) { event.preventDefault(); }
    } else if (event.altKey && event.key === "Enter") {
      var open = document.querySelector(".kb-hit details[open]");
      if (open && open.querySelector(".kb-use")) {
        event.preventDefault();
        var form = cite(open.closest(".kb-hit"));
        if (form) { form.requestSubmit(); }
      }
    } else if (event.altKey && (event.key === "d" || event.key === "D")) {
      var dups = document.getElementById("duplicates");
      if (dups) { event.preventDefault(); dups.scrollIntoView(); var b = dups.querySelector("button"); if (b) { b.focus(); } }
    }
  });
})();
