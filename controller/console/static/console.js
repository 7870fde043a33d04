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

  // Forms posted as JSON to the API; 422 details are shown beside their fields. A field
  // named a.b goes into the object a (a channel's settings: config.url); the fields of a
  // disabled fieldset (another channel kind's settings) are not sent.
  function put(out, name, value) {
    var parts = name.split("."), o = out;
    for (var i = 0; i < parts.length - 1; i++) { o[parts[i]] = o[parts[i]] || {}; o = o[parts[i]]; }
    o[parts[parts.length - 1]] = value;
  }
  function pairs(f) {
    // Header rows: unchanged names with empty values are not sent (the API keeps them);
    // otherwise the whole map, an empty value on a stored name meaning "keep its value".
    var rows = f.querySelectorAll("[data-pair]"), out = {}, changed = false;
    var stored = f.querySelectorAll("[data-stored]").length;
    rows.forEach(function (r) {
      var n = r.querySelector("[data-pair-name]"), v = r.querySelector("[data-pair-value]");
      var name = n.value.trim(), keep = n.getAttribute("data-stored");
      if (!name) { if (v.value) changed = true; return; }
      if (keep !== name || v.value) changed = true;
      out[name] = v.value || (keep === name ? "<redacted>" : "");
    });
    if (rows.length !== stored) changed = true;
    return changed ? out : undefined;
  }
  function sections(f) {
    var out = [];
    f.querySelectorAll("[data-section]").forEach(function (s, i) {
      s.setAttribute("data-path", "sections[" + i + "]");
      var monitors = [];
      s.querySelectorAll("[data-component]").forEach(function (c, j) {
        c.setAttribute("data-path", "sections[" + i + "].monitors[" + j + "]");
        var id = c.querySelector("[data-monitor-pick]").value, name = c.querySelector("[data-display-name]").value.trim();
        var item = { monitor_id: id === "" ? null : Number(id) };
        if (name) item.display_name = name;
        var desc = c.querySelector("[data-description]").value.trim();
        if (desc) item.description = desc;
        monitors.push(item);
      });
      out.push({ name: s.querySelector("[data-section-name]").value.trim(), monitors: monitors });
    });
    return out;
  }
  function collect(form) {
    var out = {};
    form.querySelectorAll("fieldset[data-object]:not([disabled])").forEach(function (fs) {
      put(out, fs.getAttribute("data-object"), {});
    });
    form.querySelectorAll(".field").forEach(function (f) {
      if (f.closest("fieldset[disabled]")) return;
      var name = f.getAttribute("data-field"), kind = f.getAttribute("data-input");
      var leaf = name.split(".").pop();
      if (kind === "object" || kind === "group") return;  // its fields are sent one by one
      if (kind === "sections") { put(out, name, sections(f)); return; }
      if (kind === "pairs") { var p = pairs(f); if (p !== undefined) put(out, name, p); return; }
      if (kind === "channels" || kind === "checks") {
        put(out, name, [].map.call(f.querySelectorAll("[data-choice]:checked"), function (i) {
          return kind === "channels" ? Number(i.value) : i.value;
        }));
        return;
      }
      if (kind === "monitors") {
        put(out, name, [].map.call(f.querySelectorAll("[data-chosen-id]"), function (li) {
          return Number(li.getAttribute("data-chosen-id"));
        }));
        return;
      }
      var input = f.querySelector("input, select, textarea");
      if (!input) return;
      if (kind === "secret") {
        if (input.hasAttribute("data-cleared")) put(out, name, null);
        else if (!input.disabled && input.value !== "") put(out, name, input.value);
        return;
      }
      if (kind === "checkbox") { put(out, name, input.checked); return; }
      var v = input.value.trim();
      if (v === "") return;
      if (kind === "number") put(out, name, Number(v));
      else if (kind === "list") put(out, name, v.split(",").map(function (s) { return s.trim(); }).filter(Boolean)
        .map(function (s) { return /^\d+$/.test(s) && ["tags", "locations", "to"].indexOf(leaf) < 0 ? Number(s) : s; }));
      else if (kind === "json") { try { put(out, name, JSON.parse(v)); } catch (e) { put(out, name, v); } }
      else put(out, name, v);
    });
    var kindName = form.getAttribute("data-kind");
    if (kindName && form.getAttribute("data-method") === "POST") out.type = kindName;
    return out;
  }

  // The slot for an error path: the deepest element named by it (sections[0].monitors[1],
  // config.url), else its top-level field.
  function slotFor(form, path) {
    var parts = path.split(/(?=[.[])/);
    for (var n = parts.length; n > 0; n--) {
      var p = parts.slice(0, n).join("");
      var els = form.querySelectorAll('[data-path="' + CSS.escape(p) + '"], .field[data-field="' + CSS.escape(p) + '"]');
      for (var i = 0; i < els.length; i++) {
        if (!els[i].closest("fieldset[disabled]")) return { el: els[i], rest: parts.slice(n).join("").replace(/^\./, "") };
      }
    }
    return null;
  }

  function showErrors(form, res) {
    form.querySelectorAll(".field-error").forEach(function (p) { p.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach(function (i) { i.removeAttribute("aria-invalid"); });
    var top = form.querySelector(".form-error") || form.querySelector("#form-error");
    var details = (res.data && res.data.error && res.data.error.details) || {};
    var unplaced = [];
    Object.keys(details).forEach(function (path) {
      var slot = slotFor(form, path);
      if (slot) {
        var err = slot.el.querySelector(":scope > .field-error") || slot.el.querySelector(".field-error");
        var text = (slot.rest ? slot.rest + ": " : "") + String(details[path]);
        err.textContent = err.textContent ? err.textContent + "; " + text : text;
        var input = slot.el.querySelector("input:not([type=hidden]):not([disabled]), select, textarea");
        if (input) input.setAttribute("aria-invalid", "true");
      } else unplaced.push(path + ": " + details[path]);
    });
    top.textContent = errorText(res) + (unplaced.length ? " — " + unplaced.join("; ") : "");
    top.hidden = false;
    var first = form.querySelector('[aria-invalid="true"]');
    if (first) first.focus();
  }

  // A channel's kind chooses which settings fieldset is shown and sent.
  document.addEventListener("change", function (ev) {
    var sel = ev.target;
    if (!sel.matches || !sel.matches('select[name="kind"]')) return;
    var form = sel.closest("form");
    form.querySelectorAll("[data-kind-settings]").forEach(function (fs) {
      var on = fs.getAttribute("data-kind-settings") === sel.value;
      fs.hidden = !on; fs.disabled = !on;
    });
  });

  // Secrets: "set" with Replace (shows an empty input) and Remove (sends null).
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-secret-replace], [data-secret-clear]");
    if (!b) return;
    var field = b.closest(".field"), input = field.querySelector("input[data-secret-set]");
    var state = field.querySelector("[data-secret-state]");
    if (b.hasAttribute("data-secret-replace")) {
      input.hidden = false; input.disabled = false; input.removeAttribute("data-cleared");
      state.textContent = "set (replacing)";
      input.focus();
    } else {
      input.hidden = true; input.disabled = true; input.value = ""; input.setAttribute("data-cleared", "1");
      state.textContent = "removed on save";
      b.focus();
    }
  });

  // Lists edited with buttons: header rows, status page sections and their components.
  function fromTemplate(root, selector) {
    return root.querySelector(selector).content.firstElementChild.cloneNode(true);
  }
  function relabel(root) {
    root.querySelectorAll("[data-section]").forEach(function (s, i) {
      var name = s.querySelector("[data-section-name]").value.trim() || "section " + (i + 1);
      s.querySelector(':scope > .section-head [data-move="-1"]').setAttribute("aria-label", "Move " + name + " up");
      s.querySelector(':scope > .section-head [data-move="1"]').setAttribute("aria-label", "Move " + name + " down");
      s.querySelector(":scope > .section-head [data-remove-row]").textContent = "Remove " + name;
      s.querySelectorAll("[data-component]").forEach(function (c, j) {
        var what = "component " + (j + 1) + " of " + name;
        c.querySelector('[data-move="-1"]').setAttribute("aria-label", "Move " + what + " up");
        c.querySelector('[data-move="1"]').setAttribute("aria-label", "Move " + what + " down");
        c.querySelector("[data-remove-row]").textContent = "Remove " + what;
      });
    });
  }
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-add-section], [data-add-component], [data-add-pair], [data-remove-row], [data-move]");
    if (!b) return;
    var box = b.closest("fieldset"), row, focus;
    if (b.hasAttribute("data-add-section")) {
      row = fromTemplate(box, "template[data-section-template]");
      box.querySelector("[data-sections]").appendChild(row);
      focus = row.querySelector("[data-section-name]");
    } else if (b.hasAttribute("data-add-component")) {
      row = fromTemplate(b.closest(".sections"), "template[data-component-template]");
      b.closest("[data-section]").querySelector("[data-components]").appendChild(row);
      focus = row.querySelector("[data-monitor-search]");
    } else if (b.hasAttribute("data-add-pair")) {
      row = fromTemplate(box, "template[data-row-template]");
      box.querySelector("[data-pairs]").appendChild(row);
      focus = row.querySelector("input");
    } else {
      row = b.closest("[data-component], [data-section], [data-pair]");
      var list = row.parentNode;
      if (b.hasAttribute("data-remove-row")) {
        var next = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        focus = next ? next.querySelector("input") : box.querySelector(":scope > button") || box;
      } else {
        var up = b.getAttribute("data-move") === "-1";
        var other = up ? row.previousElementSibling : row.nextElementSibling;
        if (other) list.insertBefore(row, up ? other : other.nextElementSibling);
        focus = b;
      }
    }
    var sec = b.closest(".sections");
    if (sec) relabel(sec);
    if (focus && focus.focus) focus.focus();
  });
  document.addEventListener("input", function (ev) {
    if (ev.target.matches && ev.target.matches("[data-section-name]")) relabel(ev.target.closest(".sections"));
  });

  // The monitor picker: a search over the API's paged list (20 at a time) fills the select.
  function searchMonitors(input) {
    var c = input.closest("[data-component]"), pick = c.querySelector("[data-monitor-pick]");
    var status = c.querySelector("[data-search-status]"), q = input.value.trim();
    var chosen = pick.options[pick.selectedIndex];
    var url = "/api/v1/monitors?limit=20&sort=name:asc" + (q ? "&search=" + encodeURIComponent(q) : "");
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (d) {
      if (input.value.trim() !== q) return;  // a newer search is on its way
      var keep = chosen && chosen.value ? chosen.cloneNode(true) : null;
      pick.textContent = "";
      if (keep) pick.appendChild(keep);
      (d.data || []).forEach(function (m) {
        if (keep && String(m.id) === keep.value) return;
        var o = document.createElement("option");
        o.value = String(m.id); o.textContent = m.name + " (#" + m.id + ")";
        pick.appendChild(o);
      });
      if (!keep && pick.options.length) pick.selectedIndex = 0;
      var n = (d.data || []).length, more = d.meta && (d.meta.next_cursor || d.meta.next_offset);
      status.textContent = n + " monitor" + (n === 1 ? "" : "s") + " found" + (more ? ", refine the search for more" : "");
      pick.setAttribute("data-searched", q);
    });
  }
  document.addEventListener("input", function (ev) {
    var input = ev.target;
    if (!input.matches || !input.matches("[data-monitor-search]")) return;
    clearTimeout(input._t);
    input._t = setTimeout(function () { searchMonitors(input); }, 250);
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key !== "Enter" || !ev.target.matches || !ev.target.matches("[data-monitor-search]")) return;
    ev.preventDefault();  // Enter searches now instead of submitting the form
    clearTimeout(ev.target._t);
    searchMonitors(ev.target);
  });

  // The monitors of a rule or a window: chosen ones listed, a search (20 at a time, by
  // name) offers others as buttons that add them.
  function findMonitors(input) {
    var box = input.closest("[data-monitor-picker]"), found = box.querySelector("[data-found]");
    var status = box.querySelector("[data-search-status]"), q = input.value.trim();
    var url = "/api/v1/monitors?limit=20&sort=name:asc" + (q ? "&search=" + encodeURIComponent(q) : "");
    fetch(url, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (d) {
      if (input.value.trim() !== q) return;  // a newer search is on its way
      var chosen = {};
      box.querySelectorAll("[data-chosen-id]").forEach(function (li) { chosen[li.getAttribute("data-chosen-id")] = 1; });
      found.textContent = "";
      (d.data || []).forEach(function (m) {
        if (chosen[String(m.id)]) return;
        var li = document.createElement("li"), b = document.createElement("button");
        b.type = "button"; b.setAttribute("data-choose", String(m.id)); b.setAttribute("data-name", m.name);
        b.textContent = "Add " + m.name + " (#" + m.id + ")";
        li.appendChild(b); found.appendChild(li);
      });
      var n = (d.data || []).length, more = d.meta && (d.meta.next_cursor || d.meta.next_offset);
      status.textContent = n + " monitor" + (n === 1 ? "" : "s") + " found" + (more ? ", refine the search for more" : "");
      found.setAttribute("data-searched", q);
    });
  }
  document.addEventListener("input", function (ev) {
    var input = ev.target;
    if (!input.matches || !input.matches("[data-monitor-find]")) return;
    clearTimeout(input._t);
    input._t = setTimeout(function () { findMonitors(input); }, 250);
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key !== "Enter" || !ev.target.matches || !ev.target.matches("[data-monitor-find]")) return;
    ev.preventDefault();
    clearTimeout(ev.target._t);
    findMonitors(ev.target);
  });
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest("[data-choose], [data-unchoose]");
    if (!b) return;
    var box = b.closest("[data-monitor-picker]"), find = box.querySelector("[data-monitor-find]");
    if (b.hasAttribute("data-choose")) {
      var li = fromTemplate(box, "template[data-chosen-template]"), name = b.getAttribute("data-name");
      var id = b.getAttribute("data-choose");
      li.setAttribute("data-chosen-id", id);
      li.querySelector("[data-chosen-name]").textContent = name + " (#" + id + ")";
      li.querySelector("[data-unchoose]").setAttribute("aria-label", "Remove " + name);
      box.querySelector("[data-chosen]").appendChild(li);
      var next = b.parentNode.nextElementSibling || b.parentNode.previousElementSibling;
      b.parentNode.remove();
      box.querySelector("[data-search-status]").textContent = name + " added";
      (next ? next.querySelector("button") : find).focus();
    } else {
      b.closest("[data-chosen-id]").remove();
      find.focus();
    }
  });

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
    document.querySelectorAll(".sections").forEach(relabel);
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
