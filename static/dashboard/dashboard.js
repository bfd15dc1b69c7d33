// Progressive enhancement only: every page works without this file.
(function () {
  "use strict";
  var FEED_MAX_ROWS = 200;

  function left(seconds) {
    if (seconds <= 0) return "expired";
    var m = Math.floor(seconds / 60), s = seconds % 60;
    return (m >= 60 ? Math.floor(m / 60) + " h " + (m % 60) + " min" : m + ":" + (s < 10 ? "0" : "") + s) + " left";
  }

  // Approval requests count down to their expiry.
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-expires-at]").forEach(function (el) {
      var seconds = Math.round((Date.parse(el.getAttribute("data-expires-at")) - now) / 1000);
      el.textContent = left(seconds);
      el.classList.toggle("expired", seconds <= 0);
    });
  }
  setInterval(tick, 1000);
  document.addEventListener("DOMContentLoaded", tick);

  // The live feed keeps its latest rows only.
  document.addEventListener("htmx:sseMessage", function (event) {
    var feed = document.querySelector("#feed tbody");
    if (!feed || !feed.contains(event.target)) return;
    var rows = feed.querySelectorAll("tr[data-call-id]");
    for (var i = FEED_MAX_ROWS; i < rows.length; i++) rows[i].remove();
  });
})();
