// Kiln UI: charts (uPlot, server-downsampled, lazy, zoom re-fetch), polling, log follow.
// No build step: this file is served as written.
"use strict";
(function () {
  var COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7ea4", "#57606a"];
  var xAxis = "step";

  function qs(url, params) {
    var u = new URL(url, location.href);
    Object.keys(params).forEach(function (k) {
      if (params[k] === null || params[k] === undefined) u.searchParams.delete(k);
      else u.searchParams.set(k, params[k]);
    });
    return u.toString();
  }

  function Chart(el) {
    this.el = el;
    this.range = null; // [x_min, x_max] in steps while zoomed
    this.plot = null;
    this.data = null;
    this.timer = null;
  }

  Chart.prototype.url = function () {
    return qs(this.el.dataset.src, {
      x: xAxis,
      x_min: this.range ? this.range[0] : null,
      x_max: this.range ? this.range[1] : null
    });
  };

  Chart.prototype.load = function () {
    var self = this;
    return fetch(this.url(), { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (data) { self.draw(data); })
      .catch(function (e) {
        self.el.querySelector(".chart-status").textContent =
          "Could not load this chart (" + e.message + "); reload the page to try again.";
      });
  };

  Chart.prototype.draw = function (data) {
    var self = this;
    this.data = data;
    var total = 0;
    // Wall times arrive as milliseconds after t0; uPlot's time scale wants Unix seconds.
    data.series.forEach(function (s) {
      if (s.times) s.seconds = s.times.map(function (ms) { return ms === null ? null : s.t0 + ms / 1000; });
    });
    var tables = data.series.map(function (s) {
      total += s.steps.length;
      var xs = data.x === "time" && s.seconds ? s.seconds : s.steps;
      return [xs, s.values];
    });
    this.el.dataset.points = String(total);
    this.el.dataset.loaded = "1";
    var status = this.el.querySelector(".chart-status");
    var box = this.el.querySelector(".chart-plot");
    if (total === 0) {
      status.textContent = this.el.dataset.empty || "No points yet.";
      return;
    }
    var ds = data.series.some(function (s) { return s.downsampled; });
    status.textContent = (ds ? "Downsampled: every extreme kept; drag to zoom for full resolution. " : "") +
      (this.range ? "Zoomed: double-click to reset." : "");
    var aligned = tables.length === 1 ? tables[0] : uPlot.join(tables);
    var opts = {
      width: Math.max(280, box.clientWidth || this.el.clientWidth || 600),
      height: 240,
      scales: { x: { time: data.x === "time" } },
      axes: [{ label: data.x === "time" ? "wall time" : (this.el.dataset.xlabel || "step") }, {}],
      series: [{ label: data.x === "time" ? "time" : "step" }].concat(data.series.map(function (s, i) {
        return { label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true, points: { show: false } };
      })),
      legend: { show: data.series.length <= 12 },
      cursor: { drag: { x: true, y: false } },
      hooks: {
        setSelect: [function (u) {
          if (u.select.width < 4) return;
          var lo = u.posToVal(u.select.left, "x"), hi = u.posToVal(u.select.left + u.select.width, "x");
          self.range = self.toSteps(lo, hi);
          u.setSelect({ left: 0, width: 0 }, false);
          self.load();
        }]
      }
    };
    if (this.plot) this.plot.destroy();
    box.innerHTML = "";
    this.plot = new uPlot(opts, aligned, box);
    box.ondblclick = function () { self.range = null; self.load(); };
  };

  // A selection on the x-axis as a step range (wall time maps through the loaded points).
  Chart.prototype.toSteps = function (lo, hi) {
    if (this.data.x !== "time") return [Math.floor(lo), Math.ceil(hi)];
    var sLo = Infinity, sHi = -Infinity;
    this.data.series.forEach(function (s) {
      (s.seconds || []).forEach(function (t, i) {
        if (t >= lo && t <= hi) { sLo = Math.min(sLo, s.steps[i]); sHi = Math.max(sHi, s.steps[i]); }
      });
    });
    return isFinite(sLo) ? [sLo, sHi] : null;
  };

  Chart.prototype.live = function () {
    var self = this;
    if (this.el.dataset.live !== "1" || this.timer) return;
    this.timer = setInterval(function () {
      if (self.el.dataset.live !== "1") { clearInterval(self.timer); self.timer = null; self.load(); return; }
      if (!self.range) self.load();
    }, 2000);
  };

  var charts = [];
  function setupCharts() {
    var els = document.querySelectorAll(".chart[data-src]");
    var io = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (!e.isIntersecting) return;
        io.unobserve(e.target);
        var c = e.target._chart;
        c.load().then(function () { c.live(); });
      });
    }, { rootMargin: "200px" }) : null;
    els.forEach(function (el) {
      var c = new Chart(el);
      el._chart = c;
      charts.push(c);
      if (io) io.observe(el); else c.load();
    });
    document.querySelectorAll("select.x-axis").forEach(function (sel) {
      sel.addEventListener("change", function () {
        xAxis = sel.value;
        charts.forEach(function (c) { if (c.data) { c.range = null; c.load(); } });
      });
    });
  }

  // Elements whose content is refreshed from a fragment URL until it says it is final.
  function setupPolling() {
    document.querySelectorAll("[data-poll]").forEach(function (el) {
      var every = parseInt(el.dataset.pollMs || "2000", 10);
      var t = setInterval(function () {
        fetch(el.dataset.poll, { credentials: "same-origin" }).then(function (r) {
          if (r.status === 401 || r.redirected) { clearInterval(t); return null; }
          return r.ok ? r.text() : null;
        }).then(function (html) {
          if (html === null) return;
          el.innerHTML = html;
          if (el.querySelector("[data-final]")) {
            clearInterval(t);
            document.querySelectorAll(".chart[data-live='1']").forEach(function (c) { c.dataset.live = "0"; });
          }
        }).catch(function () {});
      }, every);
    });
  }

  function setupLogs() {
    document.querySelectorAll("pre[data-logs]").forEach(function (pre) {
      var cursor = pre.dataset.cursor || null;
      var follow = document.getElementById(pre.dataset.follow);
      function next() {
        fetch(qs(pre.dataset.logs, { cursor: cursor, wait: 10 }), { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status)); })
          .then(function (page) {
            page.items.forEach(function (l) {
              pre.appendChild(document.createTextNode(l.ts + " " + l.level + " " + l.message + "\n"));
            });
            if (page.next_cursor) cursor = page.next_cursor;
            if (follow && follow.checked) pre.scrollTop = pre.scrollHeight;
            if (!page.done) setTimeout(next, 500);
          })
          .catch(function () { setTimeout(next, 5000); });
      }
      next();
    });
  }

  function setupDiff() {
    document.querySelectorAll("input[data-diff-only]").forEach(function (box) {
      var table = document.getElementById(box.dataset.diffOnly);
      function apply() { table.classList.toggle("diff-only", box.checked); }
      box.addEventListener("change", apply);
      apply();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupCharts();
    setupPolling();
    setupLogs();
    setupDiff();
  });
})();
