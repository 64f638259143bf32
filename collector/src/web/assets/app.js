// commscan console: the only script. It follows /events (server-sent verdict changes) and
// writes each change into the page with textContent (never as HTML): the live line under
// the title, and the status cell of a device row or device page shown on screen.
"use strict";
(function () {
  if (!window.EventSource || !document.getElementById("sign-out")) return;
  var live = document.getElementById("live");
  var ru = document.documentElement.lang === "ru";
  var names = ru
    ? { compliant: "соответствует", noncompliant: "нарушение", waived: "исключение", stale: "нет связи", unknown: "неизвестно" }
    : { compliant: "compliant", noncompliant: "noncompliant", waived: "waived", stale: "stale", unknown: "unknown" };
  function badge(status) {
    var s = document.createElement("span");
    s.className = "status " + (names[status] ? status : "unknown");
    s.textContent = names[status] || status;
    return s;
  }
  var source = new EventSource("/events");
  source.addEventListener("verdict", function (m) {
    var e;
    try { e = JSON.parse(m.data); } catch (_) { return; }
    if (live) {
      live.textContent = (e.hostname || e.device_id) + " (" + e.organisation + "): " +
        (names[e.from] || e.from) + " → " + (names[e.to] || e.to);
    }
    var cells = document.querySelectorAll('[data-device="' + CSS.escape(e.device_id) + '"] .st');
    cells.forEach(function (cell) {
      cell.textContent = "";
      cell.appendChild(badge(e.to));
    });
  });
})();
