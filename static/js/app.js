// The little JS there is: expiry countdowns. Everything else is htmx attributes, and every
// page works without either.
(function () {
  function fmt(seconds) {
    if (seconds <= 0) return "expired";
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600),
        m = Math.floor(seconds % 3600 / 60), s = Math.floor(seconds % 60);
    if (d) return "expires in " + d + "d " + h + "h";
    if (h) return "expires in " + h + "h " + m + "m";
    if (m) return "expires in " + m + "m " + s + "s";
    return "expires in " + s + "s";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      var left = (Date.parse(el.getAttribute("data-expires")) - now) / 1000;
      el.textContent = fmt(left);
      el.classList.toggle("error", left < 300);
    });
  }
  // the list's "Stop…" links to the job page's confirmation: open it
  function openStop() {
    var box = document.getElementById("stop");
    if (location.hash === "#stop" && box && box.tagName === "DETAILS") { box.open = true; box.querySelector("summary").focus(); }
  }
  document.addEventListener("DOMContentLoaded", openStop);
  setInterval(tick, 1000);
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSwap", tick);
})();
