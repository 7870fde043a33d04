// Live updates for a probefleet status page: the page is complete without this file;
// here Server-Sent Events patch component states, the overall state, incident posts and
// the incident banner in place. Post and banner HTML comes rendered (and escaped) by the server.
// Times are shown in the visitor's zone, named; the light/dark toggle is stored per browser.
(function () {
  "use strict";
  var TIME = { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
    timeZoneName: "short" };

  function localTimes(root) {
    var format;
    try { format = new Intl.DateTimeFormat(undefined, TIME); } catch (err) { return; }
    Array.prototype.forEach.call(root.querySelectorAll("time[datetime]"), function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at.getTime())) {
        el.setAttribute("title", el.textContent);
        el.textContent = format.format(at);
      }
    });
  }

  function dark() {
    var set = document.documentElement.getAttribute("data-theme");
    if (set) return set === "dark";
    return !!(window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches);
  }

  function toggle() {
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    var label = function () { button.textContent = dark() ? "Light mode" : "Dark mode"; };
    button.hidden = false;
    label();
    var system = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)");
    if (system && system.addEventListener) system.addEventListener("change", label);
    button.addEventListener("click", function () {
      var next = dark() ? "light" : "dark";
      document.documentElement.setAttribute("data-theme", next);
      try { window.localStorage.setItem("pf-theme", next); } catch (err) { /* not kept: fine */ }
      label();
    });
  }

  localTimes(document);
  toggle();
  var LABELS = { operational: "Operational", degraded: "Degraded performance", outage: "Outage",
    maintenance: "Under maintenance", unknown: "No data" };
  var OVERALL = { operational: "All systems operational", degraded: "Degraded performance",
    partial_outage: "Partial outage", major_outage: "Major outage",
    maintenance: "Under maintenance", unknown: "Status unknown" };

  function overall() {
    var states = Array.prototype.map.call(document.querySelectorAll(".component"),
      function (el) { return el.getAttribute("data-state"); });
    var down = states.filter(function (s) { return s === "outage"; }).length;
    if (!states.length) return "operational";
    if (down && down === states.length) return "major_outage";
    if (down) return "partial_outage";
    if (states.indexOf("degraded") >= 0) return "degraded";
    if (states.indexOf("maintenance") >= 0) return "maintenance";
    if (states.every(function (s) { return s === "unknown"; })) return "unknown";
    return "operational";
  }

  function apply(update) {
    var el = document.getElementById("c-" + update.component);
    if (!el || !LABELS[update.state]) return;
    el.setAttribute("data-state", update.state);
    el.querySelector(".state").textContent = LABELS[update.state];
    var banner = document.getElementById("overall");
    var state = overall();
    banner.setAttribute("data-state", state);
    banner.textContent = OVERALL[state];
  }

  function element(html) {
    var box = document.createElement("div");
    box.innerHTML = html;
    return box.firstElementChild;
  }

  function applyPost(update) {
    var post = element(update.html);
    if (post) localTimes(post);
    var old = document.getElementById("p-" + update.post);
    var list = document.getElementById("posts");
    if (post && old) {
      old.parentNode.replaceChild(post, old);
    } else if (post && list) {
      var empty = list.querySelector(".muted");
      if (empty) empty.parentNode.removeChild(empty);
      var first = list.querySelector(".post");
      if (first) list.insertBefore(post, first); else list.appendChild(post);
    }
    var banner = document.getElementById("banner");
    var fresh = update.banner ? element(update.banner) : null;
    if (banner && fresh) banner.parentNode.replaceChild(fresh, banner);
    else if (banner) banner.parentNode.removeChild(banner);
    else if (fresh) document.getElementById("overall").insertAdjacentElement("afterend", fresh);
  }

  var url = document.body.getAttribute("data-events");
  if (!url || !window.EventSource) return;
  var last = document.body.getAttribute("data-last-event");
  var source = new EventSource(url + (last ? "?last_event_id=" + encodeURIComponent(last) : ""));
  source.addEventListener("component", function (e) {
    try { apply(JSON.parse(e.data)); } catch (err) { /* a malformed frame changes nothing */ }
  });
  source.addEventListener("post", function (e) {
    try { applyPost(JSON.parse(e.data)); } catch (err) { /* a malformed frame changes nothing */ }
  });
})();
