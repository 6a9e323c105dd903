// The marketplaced dashboard: fetches /dashboard/data every few seconds and
// redraws the tables and the usage chart in place. Every value goes into the
// page as text (textContent), never as markup.
"use strict";

(function () {
  const REFRESH_MS = 5000;
  const SVG = "http://www.w3.org/2000/svg";
  const NAMES = { aws: "AWS", azure: "Azure", gcp: "Google Cloud" };
  const STATES = ["active", "pending", "suspended", "cancelled", "expired"];
  let last = null;
  let timer = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function fmtNum(n) { return Number(n).toLocaleString("en-US"); }
  function fmtShort(n) { return Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 2 }).format(n); }
  function fmtHour(iso) { return iso ? iso.slice(0, 13).replace("T", " ") + ":00" : "–"; }
  function fmtTime(iso) { return iso ? iso.slice(0, 19).replace("T", " ") : "–"; }
  function name(p) { return NAMES[p] || p; }

  function fillBody(table, rows, cols, empty) {
    const tb = table.tBodies[0];
    tb.replaceChildren();
    if (rows.length === 0) {
      const tr = el("tr");
      const td = el("td", empty, "empty");
      td.colSpan = cols;
      tr.append(td);
      tb.append(tr);
      return;
    }
    for (const r of rows) {
      const tr = el("tr");
      r.forEach((c, i) => {
        const cell = i === 0 ? el("th", c.text !== undefined ? c.text : c) : el("td", c.text !== undefined ? c.text : c);
        if (i === 0) cell.scope = "row";
        if (c.cls) cell.className = c.cls;
        tr.append(cell);
      });
      tb.append(tr);
    }
  }

  function renderSubscriptions(d) {
    const rows = d.providers.map((p) => {
      const c = d.subscriptions[p] || {};
      const total = Object.values(c).reduce((a, b) => a + b, 0);
      return [name(p), ...STATES.map((s) => ({ text: fmtNum(c[s] || 0), cls: "num" })), { text: fmtNum(total), cls: "num" }];
    });
    fillBody($("subscriptions"), rows, 7, "No cloud is configured.");
    const linked = d.linked || {};
    $("linked").textContent = d.providers.length === 0 ? "" : "Linked to one of your accounts: " + d.providers.map((p) => {
      const total = Object.values(d.subscriptions[p] || {}).reduce((a, b) => a + b, 0);
      return name(p) + " " + fmtNum(linked[p] || 0) + " of " + fmtNum(total);
    }).join(", ") + ".";
  }

  function renderDimensions(d) {
    const sel = $("dimension");
    const want = ["", ...d.usage.map((s) => s.provider + "/" + s.dimension)];
    const have = Array.from(sel.options).map((o) => o.value);
    if (want.join("\n") === have.join("\n")) return;
    const keep = sel.value;
    sel.replaceChildren(el("option", "All dimensions"));
    sel.options[0].value = "";
    for (const s of d.usage) {
      const o = el("option", name(s.provider) + ": " + s.dimension);
      o.value = s.provider + "/" + s.dimension;
      sel.append(o);
    }
    sel.value = want.includes(keep) ? keep : "";
  }

  // perProvider sums the chosen series per cloud and hour.
  function perProvider(d) {
    const chosen = $("dimension").value;
    const out = {};
    for (const p of d.providers) out[p] = new Array(d.hours.length).fill(0);
    for (const s of d.usage) {
      if (chosen && chosen !== s.provider + "/" + s.dimension) continue;
      if (!out[s.provider]) out[s.provider] = new Array(d.hours.length).fill(0);
      s.quantity.forEach((q, i) => { out[s.provider][i] += q; });
    }
    return out;
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  // oneChart draws one cloud's usage per hour as bars on its own scale:
  // the clouds' dimensions differ, so they share no axis.
  function oneChart(d, p, vals) {
    const W = 720, H = 150, L = 56, R = 8, T = 10, B = 30;
    const n = d.hours.length;
    const max = Math.max(0, ...vals);
    const sum = vals.reduce((a, b) => a + b, 0);
    const top = niceMax(max);
    const slot = (W - L - R) / n;
    const y = (v) => T + (H - T - B) * (1 - v / top);

    const fig = el("figure", null, "chart-one");
    const cap = el("figcaption");
    cap.append(el("span", null, "swatch " + p), document.createTextNode(`${name(p)}: ${fmtNum(sum)} in ${n} hours`));
    const s = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "data-provider": p,
      "aria-label": `${name(p)} usage per hour: ${fmtNum(sum)} in the last ${n} hours; the largest hour holds ${fmtNum(max)}.` });
    for (const f of [0, 0.5, 1]) {
      const gy = y(top * f);
      s.append(svg("line", { x1: L, x2: W - R, y1: gy, y2: gy, class: f === 0 ? "axis" : "grid" }));
      s.append(svg("text", { x: L - 6, y: gy + 4, "text-anchor": "end", class: "tick" }, fmtShort(top * f)));
    }
    d.hours.forEach((h, i) => {
      const x0 = L + i * slot + 1;
      const v = vals[i];
      if (v > 0) {
        const r = svg("rect", { x: x0, y: y(v), width: Math.max(1, slot - 2), height: Math.max(1, y(0) - y(v)),
          class: "bar " + p, "data-provider": p, "data-hour": h, "data-value": v });
        r.append(svg("title", {}, `${name(p)}, ${fmtHour(h)} UTC: ${fmtNum(v)}`));
        s.append(r);
      }
      if (i % 3 === 0) {
        s.append(svg("text", { x: x0 + slot / 2, y: H - B + 16, "text-anchor": "middle", class: "tick" }, h.slice(11, 16)));
      }
    });
    fig.append(cap, s);
    return fig;
  }

  function renderChart(d) {
    const data = perProvider(d);
    const provs = Object.keys(data);
    const wrap = el("div");
    wrap.id = "usage-chart";
    for (const p of provs) wrap.append(oneChart(d, p, data[p]));
    $("chart").replaceChildren(wrap);

    const t = $("usage-table");
    const head = el("tr");
    head.append(el("th", "Hour (UTC)"), ...provs.map((p) => el("th", name(p))));
    head.querySelectorAll("th").forEach((c) => { c.scope = "col"; });
    t.tHead.replaceChildren(head);
    const rows = [];
    d.hours.forEach((h, i) => {
      if (provs.some((p) => data[p][i] > 0)) rows.push([fmtHour(h), ...provs.map((p) => ({ text: fmtNum(data[p][i]), cls: "num" }))]);
    });
    fillBody(t, rows, provs.length + 1, "No usage in the last 24 hours.");
  }

  // fmtCount shows a count the server stopped at its limit as "50+".
  function fmtCount(n, capped) { return fmtNum(n) + (capped ? "+" : ""); }

  function renderHealth(d) {
    fillBody($("health"), d.reporter.map((h) => [
      name(h.provider),
      { text: fmtNum(h.pending), cls: "num" },
      fmtHour(h.oldest_unreported),
      { text: fmtCount(h.retried, h.retried_capped), cls: "num" },
      { text: fmtNum(h.reported), cls: "num" },
      { text: fmtCount(h.rejected_count, h.rejected_capped), cls: "num" + (h.rejected_count ? " bad" : "") },
      { text: fmtCount(h.conflict_count, h.conflict_capped), cls: "num" + (h.conflict_count ? " bad" : "") },
    ]), 7, "No cloud is configured.");
    const rows = [];
    const capped = [];
    for (const h of d.reporter) {
      for (const [state, list, more] of [["rejected", h.rejected, h.rejected_capped], ["conflict", h.conflict, h.conflict_capped]]) {
        for (const b of list) rows.push([name(h.provider), state, b.customer, b.dimension, fmtHour(b.hour), { text: fmtNum(b.units), cls: "num" }, b.reason]);
        if (more) capped.push(name(h.provider) + " " + state);
      }
    }
    fillBody($("problems"), rows, 7, "None: every cloud accepted what was sent.");
    const limit = d.reporter.length ? d.reporter[0].problem_limit : 0;
    $("problems-note").textContent = capped.length === 0 ? "" :
      "Only the newest " + fmtNum(limit) + " of each are counted and listed; there are more (" + capped.join(", ") + ").";
  }

  function renderParked(d) {
    fillBody($("parked"), d.parked.map((n) => [name(n.provider), n.id, n.kind, n.subject, { text: fmtNum(n.attempts), cls: "num" },
      fmtTime(n.received), n.reason]), 7, "None.");
  }

  const SOURCES = { usage_log: "Usage log", inbox: "Inbox" };

  function renderQuarantine(d) {
    const counts = d.quarantined_count || {};
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const note = $("quarantine-count");
    note.textContent = total === 0 ? "Nothing is quarantined." : fmtNum(total) + " quarantined: " +
      Object.keys(SOURCES).map((s) => SOURCES[s] + " " + fmtNum(counts[s] || 0)).join(", ") + ".";
    note.classList.toggle("bad", total > 0);
    fillBody($("quarantine"), d.quarantined.map((q) => [String(q.id), SOURCES[q.source] || q.source, q.ref,
      { text: fmtNum(q.size), cls: "num" }, fmtTime(q.at), q.reason]), 6, "None.");
  }

  function render(d) {
    last = d;
    renderSubscriptions(d);
    renderDimensions(d);
    renderChart(d);
    renderHealth(d);
    renderParked(d);
    renderQuarantine(d);
    document.body.dataset.generated = d.generated;
  }

  // say shows the refresh status; a screen reader hears it only when
  // something is wrong, not on every refresh.
  function say(node, text, loud) {
    node.setAttribute("aria-live", loud ? "assertive" : "off");
    node.textContent = text;
    node.classList.toggle("bad", loud);
  }

  async function refresh() {
    clearTimeout(timer);
    const status = $("status");
    try {
      const res = await fetch("/dashboard/data", { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (res.status === 401) {
        say(status, "Your sign-in has ended: reload the page to sign in again.", true);
        return;
      }
      if (!res.ok) throw new Error("the daemon answered " + res.status);
      render(await res.json());
      say(status, "Updated " + new Date().toLocaleTimeString("en-GB") + "; refreshes every " + REFRESH_MS / 1000 + " s.", false);
    } catch (err) {
      say(status, "Could not refresh (" + err.message + "); trying again.", true);
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("refresh").addEventListener("click", refresh);
    $("dimension").addEventListener("change", () => { if (last) renderChart(last); });
    refresh();
  });
})();
