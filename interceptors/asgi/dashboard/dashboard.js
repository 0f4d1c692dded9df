// The resilience dashboard: renders the snapshots of ./events (server-sent events).
// Every value from the server is inserted as text (textContent / setAttribute of data-*),
// never as markup: a policy named "<script>" is shown, not run.
"use strict";
(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var LABELS = [
    ["admitted", "admitted"], ["failed", "failed"], ["rejected", "rejected"],
    ["queued", "queued"], ["retries", "retries"], ["give_ups", "give-ups"],
    ["timeouts", "timeouts"], ["fallbacks", "fallbacks"], ["replays", "idempotent replays"],
    ["store_failures", "store degradations"], ["evicted", "records evicted"]
  ];
  var BAD = { failed: 1, rejected: 1, give_ups: 1, timeouts: 1, store_failures: 1 };
  var STATES = { closed: 1, open: 1, half_open: 1 };
  var cards = new Map();
  var main = document.getElementById("policies");
  var statusEl = document.getElementById("status");
  var metaEl = document.getElementById("meta");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function num(x) { var n = Number(x); return isFinite(n) ? n : 0; }

  function spark(svg, series, bad) {
    var values = (Array.isArray(series) ? series : []).map(num);
    var max = Math.max(1, Math.max.apply(null, values.concat([0])));
    var n = Math.max(1, values.length - 1);
    var points = values.map(function (v, i) {
      return (i * 120 / n).toFixed(1) + "," + (21 - v * 20 / max).toFixed(1);
    }).join(" ");
    var line = svg.firstChild;
    if (!line) { line = document.createElementNS(SVG, "polyline"); svg.appendChild(line); }
    line.setAttribute("points", points);
    svg.setAttribute("class", bad ? "spark bad" : "spark");
  }

  function makeCard(name) {
    var card = el("section", "card");
    card.setAttribute("data-policy", name);
    var h = el("h2");
    h.appendChild(el("span", "name", name));
    var state = el("span", "state");
    state.hidden = true;
    h.appendChild(state);
    card.appendChild(h);
    var sub = el("div", "sub");
    card.appendChild(sub);
    var latency = el("div", "latency");
    latency.hidden = true;
    var latencyText = el("span", "text");
    var latencySvg = document.createElementNS(SVG, "svg");
    latencySvg.setAttribute("viewBox", "0 0 120 22");
    latencySvg.setAttribute("preserveAspectRatio", "none");
    latency.appendChild(latencyText);
    latency.appendChild(latencySvg);
    card.appendChild(latency);
    var table = el("table");
    var rows = {};
    LABELS.forEach(function (pair) {
      var tr = el("tr");
      tr.setAttribute("data-metric", pair[0]);
      tr.hidden = true;
      tr.appendChild(el("td", "l", pair[1]));
      var rate = el("td", "v");
      var chart = el("td", "c");
      var svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("viewBox", "0 0 120 22");
      svg.setAttribute("preserveAspectRatio", "none");
      chart.appendChild(svg);
      var total = el("td", "t");
      tr.appendChild(rate); tr.appendChild(chart); tr.appendChild(total);
      table.appendChild(tr);
      rows[pair[0]] = { tr: tr, rate: rate, svg: svg, total: total };
    });
    card.appendChild(table);
    var transitions = el("ol", "transitions");
    card.appendChild(transitions);
    return { card: card, state: state, sub: sub, latency: latency, latencyText: latencyText,
      latencySvg: latencySvg, rows: rows,
      transitions: transitions };
  }

  function clock(at) {
    var d = new Date(num(at) * 1000);
    return d.toLocaleTimeString([], { hour12: false });
  }

  function update(c, p) {
    if (p.state !== null && p.state !== undefined) {
      var s = String(p.state);
      c.state.textContent = s.replace("_", "-");
      c.state.className = "state " + (STATES[s] ? s : "other");
      c.state.setAttribute("data-state", s);
      c.state.hidden = false;
    }
    var sub = String(p.kind || "policy");
    if (Array.isArray(p.pipelines) && p.pipelines.length) sub += " · in " + p.pipelines.join(", ");
    if (typeof p.consecutive_failures === "number") {  // a breaker counting streaks
      sub += " · " + p.consecutive_failures + " failed in a row";
    }
    if (Array.isArray(p.instances) && p.instances.length > 1) {
      sub += " · " + p.instances.length + " instances";
      var states = p.instances.filter(function (i) { return i.state; });
      var differ = states.some(function (i) { return i.state !== states[0].state; });
      if (differ) {  // as each instance last saw it
        sub += " (" + states.map(function (i) { return i.instance + ": " + i.state; }).join(", ") + ")";
      }
    }
    c.sub.textContent = sub;
    var rates = p.rates || {}, totals = p.totals || {};
    LABELS.forEach(function (pair) {
      var k = pair[0], row = c.rows[k], series = rates[k] || [];
      var total = num(totals[k]);
      row.tr.hidden = total === 0;
      if (total === 0) return;
      // the last entry is the running second: show the last complete one
      var last = series.length > 1 ? num(series[series.length - 2]) : 0;
      row.rate.textContent = last + "/s";
      row.total.textContent = String(total);
      spark(row.svg, series.slice(0, -1), BAD[k]);
    });
    if (p.latency) {
      c.latency.hidden = false;
      c.latencyText.textContent = "latency (10 s) p50 " + num(p.latency.p50) + " ms · p90 " +
        num(p.latency.p90) + " ms · p99 " + num(p.latency.p99) + " ms";
      c.latencyText.title = num(p.latency.count) + " calls";
      // p99 of each second (empty seconds at 0)
      spark(c.latencySvg, (p.latency_p99 || []).slice(0, -1), false);
    }
    var items = (Array.isArray(p.transitions) ? p.transitions : []).slice().reverse();
    c.transitions.replaceChildren.apply(c.transitions, items.map(function (t) {
      var by = t.instance ? " (" + t.instance + ")" : "";
      return el("li", "", clock(t.at) + "  " + t.from + " → " + t.to + "  " + t.reason + by);
    }));
  }

  function render(snap) {
    if (snap.error) {  // the source failed: keep the last picture, say so
      statusEl.textContent = String(snap.error); statusEl.className = "status lost";
      return;
    }
    statusEl.textContent = "live"; statusEl.className = "status live";
    var seen = new Set();
    (snap.policies || []).forEach(function (p) {
      var name = String(p.name);
      seen.add(name);
      var c = cards.get(name);
      if (!c) { c = makeCard(name); cards.set(name, c); main.appendChild(c.card); }
      update(c, p);
    });
    cards.forEach(function (c, name) {
      if (!seen.has(name)) { c.card.remove(); cards.delete(name); }
    });
    document.getElementById("empty").hidden = cards.size > 0;
    var instances = snap.instances || [];
    var meta = clock(snap.time) + " · " + instances.length + " instance" +
      (instances.length === 1 ? " " + instances[0] : "s");
    if (num(snap.dropped)) meta += " · " + num(snap.dropped) + " policies not shown (limit)";
    metaEl.textContent = meta;
  }

  var source = new EventSource("events");
  source.onopen = function () { statusEl.textContent = "live"; statusEl.className = "status live"; };
  source.onerror = function () {
    statusEl.textContent = "reconnecting…"; statusEl.className = "status lost";
  };
  source.onmessage = function (e) {
    try { render(JSON.parse(e.data)); } catch (err) { statusEl.textContent = "bad data"; }
  };
})();
