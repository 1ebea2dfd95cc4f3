// Live status for the dashboard: polls the page's JSON endpoint while a search is queued or
// running, updates the figures in place, and reloads once a search ends (so results appear).
"use strict";
(function () {
  const ACTIVE = new Set(["queued", "running"]);
  const EVERY_MS = 2000;

  function duration(s) {
    if (s === null || s === undefined) return "—";
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
  }

  function set(root, field, text) {
    const el = root.querySelector('[data-field="' + field + '"]');
    if (el) el.textContent = text;
  }

  async function fetchJson(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(url + ": " + response.status);
    return response.json();
  }

  function pollSearch(section) {
    const tick = async () => {
      try {
        const live = await fetchJson(section.dataset.url);
        set(section, "status", live.status + (live.cancel_requested ? " (cancel requested)" : ""));
        set(section, "phase", live.phase || "—");
        set(section, "percent", live.percent.toFixed(1) + "%");
        set(section, "epoch", live.epoch ? live.epoch + " / " + live.epochs : "—");
        set(section, "eta", duration(live.eta_s));
        const bar = section.querySelector('[data-field="bar"]');
        if (bar) bar.style.width = live.percent + "%";
        if (live.status !== section.dataset.status) return window.location.reload();
      } catch (err) { console.warn(err); }
      setTimeout(tick, EVERY_MS);
    };
    setTimeout(tick, EVERY_MS);
  }

  function pollList(table) {
    const rows = () => Array.from(table.querySelectorAll("tr[data-search-id]")).filter((r) => ACTIVE.has(r.dataset.status));
    const tick = async () => {
      const active = rows();
      if (!active.length) return;
      try {
        const ids = active.map((r) => r.dataset.searchId).join(",");
        const live = await fetchJson(table.dataset.statusUrl + "?ids=" + encodeURIComponent(ids));
        for (const row of active) {
          const s = live[row.dataset.searchId];
          if (!s) continue;
          if (s.status !== row.dataset.status) return window.location.reload();
          set(row, "percent", Math.round(s.percent) + "%");
          set(row, "phase", s.phase || "");
        }
      } catch (err) { console.warn(err); }
      setTimeout(tick, EVERY_MS);
    };
    setTimeout(tick, EVERY_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const section = document.getElementById("live");
    if (section && ACTIVE.has(section.dataset.status)) pollSearch(section);
    const table = document.querySelector("table.searches");
    if (table) pollList(table);
  });
})();
