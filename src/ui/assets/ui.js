// dnsshift status page: live updates over Server-Sent Events and the
// pause/live toggle. Without this script the page is complete; it only
// stops being live.
"use strict";
(function () {
  var main = document.getElementById("live");
  var toggle = document.getElementById("live-toggle");
  var meta = document.querySelector('meta[name="csrf"]');
  if (!main || !toggle || !window.EventSource) { return; }
  var csrf = meta ? meta.getAttribute("content") : "";
  var source = null;
  var paused = false;
  // An action's outcome is kept across updates for this long, then goes,
  // so that an old refusal never reads as the current state.
  var FLASH_MS = 20000;
  setTimeout(function () {
    var f = main.querySelector('[data-field="flash"]');
    if (f) { f.remove(); }
  }, FLASH_MS);

  // Forms in a streamed rendering carry no token: give them the page's.
  function fillTokens() {
    var fields = main.querySelectorAll('input[name="csrf"]');
    for (var i = 0; i < fields.length; i++) { fields[i].value = csrf; }
  }

  // Keeps what the user is typing and where the focus is across a swap.
  function swap(html) {
    var active = document.activeElement;
    if (active && main.contains(active) && active.tagName === "INPUT") { return; }
    // An action's outcome stays (see FLASH_MS).
    var flash = main.querySelector('[data-field="flash"]');
    main.innerHTML = html;
    if (flash) { main.insertBefore(flash, main.firstChild); }
    fillTokens();
  }

  function connect() {
    source = new EventSource("/ui/events");
    source.addEventListener("live", function (e) { if (!paused) { swap(e.data); } });
  }

  function show() {
    toggle.setAttribute("aria-pressed", paused ? "true" : "false");
    toggle.textContent = paused ? "❚❚ Paused — resume live" : "● Live — pause";
  }

  toggle.hidden = false;
  toggle.addEventListener("click", function () {
    paused = !paused;
    if (paused) { if (source) { source.close(); source = null; } }
    else { connect(); }
    show();
  });
  show();
  connect();
})();
