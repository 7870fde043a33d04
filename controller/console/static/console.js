// probefleet console: progressive enhancement of server-rendered pages. Every change goes
// through the REST API with the session cookie and the page's CSRF token; live updates
// come over the API's WebSocket for what is on screen only.
(function () {
  "use strict";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  var fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
    timeZoneName: "short"
  });

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.title = el.getAttribute("datetime"); el.textContent = fmt.format(d); }
    });
  }

  function toast(text, bad) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = text;
    el.className = "toast" + (bad ? " bad" : "");
    el.hidden = false;
    clearTimeout(toast.t);
    toast.t = setTimeout(function () { el.hidden = true; }, 4000);
  }

  function api(method, url, body) {
    var init = { method: method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } };
    if (body !== undefined) { init.headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    return fetch(url, init).then(function (r) {
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = null; }
        return { ok: r.ok, status: r.status, data: data };
      });
    });
  }

  function errorText(res) {
    var e = res.data && res.data.error;
    return e ? e.message : "Request failed (" + res.status + ")";
  }

  // Buttons: data-api="METHOD /path", optional data-body (JSON), data-done, data-reload.
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-api]");
    if (!b) return;
    var parts = b.getAttribute("data-api").split(" ");
    var body = b.hasAttribute("data-body") ? JSON.parse(b.getAttribute("data-body")) : undefined;
    b.disabled = true;
    api(parts[0], parts[1], body).then(function (res) {
      b.disabled = false;
      if (!res.ok) { toast(errorText(res), true); return; }
      var d = res.data && res.data.data;
      if (d && d.delivered === false) { toast("Not delivered: " + (d.error || d.status), true); return; }
      toast(b.getAttribute("data-done") || "Done");
      if (b.hasAttribute("data-show")) showOnce(b.getAttribute("data-show"), res);
      if (b.hasAttribute("data-reload")) location.reload();
    });
  });

  // Copy buttons: data-copy names the element whose text is copied.
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-copy]");
    if (!b) return;
    var el = document.getElementById(b.getAttribute("data-copy"));
    if (el && navigator.clipboard) navigator.clipboard.writeText(el.textContent).then(function () { toast("Copied"); });
  });

  // A secret the API shows once (a new key, a new ping URL): shown, never stored.
  function showOnce(field, res) {
    var box = document.getElementById("shown");
    var value = res.data && res.data.data && res.data.data[field];
    if (!box || !value) return;
    document.getElementById("shown-label").textContent = "Copy it now, it is shown once: " + field;
    document.getElementById("shown-value").textContent = value;
    box.hidden = false;
    box.focus();
  }

  // Forms posted as JSON to the API; 422 details are shown beside their fields.
  function collect(form) {
    var out = {};
    form.querySelectorAll(".field").forEach(function (f) {
      var name = f.getAttribute("data-field"), kind = f.getAttribute("data-input");
      var input = f.querySelector("input, select, textarea");
      if (!input) return;
      if (kind === "checkbox") { out[name] = input.checked; return; }
      var v = input.value.trim();
      if (v === "") return;
      if (kind === "number") out[name] = Number(v);
      else if (kind === "list") out[name] = v.split(",").map(function (s) { return s.trim(); }).filter(Boolean)
        .map(function (s) { return /^\d+$/.test(s) && name !== "tags" && name !== "locations" ? Number(s) : s; });
      else if (kind === "json") { try { out[name] = JSON.parse(v); } catch (e) { out[name] = v; } }
      else out[name] = v;
    });
    var kindName = form.getAttribute("data-kind");
    if (kindName && form.getAttribute("data-method") === "POST") out.type = kindName;
    return out;
  }

  function showErrors(form, res) {
    form.querySelectorAll(".field-error").forEach(function (p) { p.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach(function (i) { i.removeAttribute("aria-invalid"); });
    var top = form.querySelector(".form-error") || form.querySelector("#form-error");
    var details = (res.data && res.data.error && res.data.error.details) || {};
    var unplaced = [];
    Object.keys(details).forEach(function (path) {
      var name = path.split(/[.[]/)[0];
      var slot = form.querySelector('.field[data-field="' + CSS.escape(name) + '"]');
      if (slot) {
        slot.querySelector(".field-error").textContent = String(details[path]);
        var input = slot.querySelector("input, select, textarea");
        if (input) input.setAttribute("aria-invalid", "true");
      } else unplaced.push(path + ": " + details[path]);
    });
    top.textContent = errorText(res) + (unplaced.length ? " — " + unplaced.join("; ") : "");
    top.hidden = false;
    var first = form.querySelector('[aria-invalid="true"]');
    if (first) first.focus();
  }

  document.querySelectorAll("form[data-action]").forEach(function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var save = form.querySelector('button[type="submit"]');
      save.disabled = true;
      api(form.getAttribute("data-method"), form.getAttribute("data-action"), collect(form)).then(function (res) {
        save.disabled = false;
        if (!res.ok) { showErrors(form, res); return; }
        var id = res.data && res.data.data && res.data.data.id;
        var next = form.getAttribute("data-next");
        if (next && id) next = next.replace("{id}", String(id));
        if (form.hasAttribute("data-show")) {
          showOnce(form.getAttribute("data-show"), res);
          form.reset();
          if (next) {
            var a = document.createElement("a");
            a.href = next; a.textContent = "Continue"; a.id = "continue";
            document.getElementById("shown").appendChild(a);
          }
          return;
        }
        if (form.hasAttribute("data-reload")) { location.reload(); return; }
        if (next) { location.href = next; return; }
        location.href = id ? "/console/monitors/" + id : "/";
      });
    });
  });

  // "Test now" on the monitor form: the unsaved fields run once from their regions.
  function cell(tr, text) { var td = document.createElement("td"); td.textContent = text == null ? "-" : String(text); tr.appendChild(td); }
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-test]");
    if (!b) return;
    var form = document.getElementById(b.getAttribute("data-form"));
    var out = document.getElementById("test-results");
    var body = collect(form);
    body.type = form.getAttribute("data-kind");
    b.disabled = true;
    out.hidden = false;
    out.setAttribute("aria-busy", "true");
    document.getElementById("test-summary").textContent = "Running from the chosen regions…";
    document.querySelector("#test-results tbody").textContent = "";
    api("POST", b.getAttribute("data-test"), body).then(function (res) {
      b.disabled = false;
      out.removeAttribute("aria-busy");
      if (!res.ok) { showErrors(form, res); document.getElementById("test-summary").textContent = errorText(res); return; }
      var d = res.data.data;
      document.getElementById("test-summary").textContent = "Verdict: " + d.status + (d.error ? " — " + d.error : "");
      var tbody = document.querySelector("#test-results tbody");
      d.regions.forEach(function (r) {
        var tr = document.createElement("tr");
        tr.setAttribute("data-region", r.region);
        cell(tr, r.region);
        var st = document.createElement("td");
        var span = document.createElement("span");
        span.className = "status status-" + (r.is_ok ? "up" : r.is_ok === false ? "down" : "unknown");
        span.textContent = r.status;
        st.appendChild(span); tr.appendChild(st);
        cell(tr, r.response_time == null ? null : r.response_time.toFixed(1) + " ms");
        cell(tr, r.status_code);
        cell(tr, [r.reason, r.error].filter(Boolean).join(": ") || null);
        tbody.appendChild(tr);
      });
      out.setAttribute("data-done", "1");
    });
  });

  // Live updates over the API's WebSocket: the monitors on screen, or incidents.
  var socket = null;
  function watched() {
    var ids = [];
    document.querySelectorAll("[data-monitor-id]").forEach(function (el) {
      var id = Number(el.getAttribute("data-monitor-id"));
      if (ids.indexOf(id) < 0) ids.push(id);
    });
    return ids;
  }
  function setStatus(el, status) {
    el.className = el.className.replace(/\bstatus-\S+/, "status-" + status);
    el.textContent = status;
  }
  function onEvent(ev) {
    var p = ev.payload || {};
    if (p.monitor && ev.topic === "monitor.status") {
      document.querySelectorAll('[data-monitor-id="' + p.monitor.id + '"] [data-field="status"]').forEach(function (el) {
        setStatus(el, p.monitor.status);
      });
      var prev = p.previous_status, now = p.monitor.status;
      if (prev && prev !== now) {
        var a = document.querySelector('[data-count="' + prev + '"]'), b = document.querySelector('[data-count="' + now + '"]');
        if (a) a.textContent = Math.max(0, Number(a.textContent) - 1);
        if (b) b.textContent = Number(b.textContent) + 1;
      }
    }
    if (ev.topic === "incident.updates" && document.querySelector('[data-live="incidents"]')) {
      toast("Incidents changed: refreshing");
      setTimeout(function () { location.reload(); }, 800);
    }
  }
  function subscribe() {
    if (!socket || socket.readyState !== 1) return;
    var live = document.querySelector("[data-live]");
    if (!live) return;
    var msg = live.getAttribute("data-live") === "incidents"
      ? { subscribe: ["incident.updates"] }
      : { subscribe: ["monitor.status"], monitor_ids: watched() };
    if (msg.monitor_ids && !msg.monitor_ids.length) return;
    socket.send(JSON.stringify(msg));
  }
  function connect() {
    if (!document.querySelector("[data-live]")) return;
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(proto + "//" + location.host + "/api/v1/ws");
    document.body.setAttribute("data-ws", "connecting");
    socket.onopen = function () { document.body.setAttribute("data-ws", "open"); };
    socket.onmessage = function (m) {
      var ev = JSON.parse(m.data);
      if (ev.type === "welcome") subscribe();
      else if (ev.type === "subscribed") document.body.setAttribute("data-ws", "subscribed");
      else if (ev.type === "event") onEvent(ev);
    };
    socket.onclose = function () {
      document.body.setAttribute("data-ws", "closed");
      setTimeout(connect, 3000);
    };
  }

  // The chart: p50 (solid) and p95 (dashed) per region.
  var palette = ["#2f6fde", "#d9480f", "#2b8a3e", "#ae3ec9", "#e67700", "#0c8599"];
  var plot = null;
  function drawChart(range) {
    var box = document.getElementById("chart");
    if (!box || !window.uPlot) return;
    document.querySelectorAll("[data-range]").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.getAttribute("data-range") === range));
    });
    fetch(box.getAttribute("data-chart") + "?range=" + range, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (d) {
        var regions = [];
        var series = [{}].concat(d.series.map(function (s) {
          if (regions.indexOf(s.region) < 0) regions.push(s.region);
          var c = palette[regions.indexOf(s.region) % palette.length];
          return { label: s.region + " " + s.q, stroke: c, width: s.q === "p50" ? 2 : 1, dash: s.q === "p95" ? [6, 4] : undefined,
                   spanGaps: true, value: function (u, v) { return v == null ? "–" : v.toFixed(1) + " ms"; } };
        }));
        var data = [d.t].concat(d.series.map(function (s) { return s.values; }));
        if (plot) plot.destroy();
        box.textContent = "";
        if (!d.series.length) { box.textContent = "No response times in this range yet."; return; }
        plot = new uPlot({ width: Math.max(280, box.clientWidth), height: 260, series: series,
          axes: [{}, { label: "ms" }], scales: { x: { time: true } } }, data, box);
        box.setAttribute("data-drawn", range);
      });
  }
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-range]");
    if (b) drawChart(b.getAttribute("data-range"));
  });

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var tz = document.getElementById("tz");
    if (tz) tz.textContent = "Times in " + zone;
    connect();
    if (document.getElementById("chart")) drawChart("24h");
  });
  document.addEventListener("htmx:afterSwap", function (ev) {
    localTimes(document);
    subscribe();
  });
})();
