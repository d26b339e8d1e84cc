/* The figures' charts (web/pages/figures.py): each element with data-chart="<id>" is drawn
   with the vendored ECharts from the page's JSON (<script id="fig-data">), which the server
   built with the same numbers as the tables and their exports. No map tiles or geographic
   files: located requests are a scatter on longitude/latitude axes. */
(function () {
  "use strict";
  var COLORS = ["#0b5cad", "#1e7b34", "#c06000", "#7b3fa0", "#b3261e", "#2a8c8c", "#6b7280", "#a17a00"];

  function base() {
    return {
      color: COLORS,
      animation: false,
      tooltip: { trigger: "axis", confine: true },
      grid: { left: 8, right: 16, top: 28, bottom: 8, containLabel: true },
      textStyle: { fontFamily: getComputedStyle(document.documentElement).fontFamily }
    };
  }

  function percentAxis() {
    return { type: "value", min: 0, max: 100, axisLabel: { formatter: "{value}%" } };
  }

  function option(spec) {
    var o = base();
    var legend = spec.series.length > 1 ? { top: 0, type: "scroll" } : undefined;
    if (legend) { o.legend = legend; } else { o.grid.top = 12; }
    if (spec.kind === "hbar") {
      o.yAxis = { type: "category", data: spec.categories.slice().reverse(), axisLabel: { width: 110, overflow: "truncate" } };
      o.xAxis = spec.percent ? percentAxis() : { type: "value", minInterval: 1 };
      o.series = spec.series.map(function (s) {
        return { name: s.name, type: "bar", data: s.data.slice().reverse(), barMaxWidth: 14 };
      });
      return o;
    }
    o.xAxis = { type: "category", data: spec.categories };
    if (spec.kind === "calls") {
      o.yAxis = [{ type: "value", minInterval: 1 }, percentAxis()];
      o.series = spec.series.map(function (s) {
        return s.axis ? { name: s.name, type: "line", yAxisIndex: 1, data: s.data, connectNulls: true }
                      : { name: s.name, type: "bar", data: s.data, barMaxWidth: 18 };
      });
      return o;
    }
    o.yAxis = spec.percent ? percentAxis() : { type: "value", minInterval: 1 };
    o.series = spec.series.map(function (s) {
      var one = { name: s.name, type: spec.kind === "line" ? "line" : "bar", data: s.data, barMaxWidth: 22 };
      if (spec.kind === "stacked") { one.stack = "all"; }
      return one;
    });
    return o;
  }

  function mapOption(spec) {
    var o = base();
    var xs = spec.points.map(function (p) { return p[0]; });
    var ys = spec.points.map(function (p) { return p[1]; });
    function pad(values) {
      if (!values.length) { return [0, 1]; }
      var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
      var margin = Math.max((hi - lo) * 0.08, 0.01);
      return [lo - margin, hi + margin];
    }
    var x = pad(xs), y = pad(ys);
    o.grid.top = 12;
    o.tooltip = { trigger: "item", confine: true, formatter: function (p) {
      var d = p.data;
      return [d[2], d[3], d[4]].filter(Boolean).join("<br>") + "<br>" + d[1].toFixed(4) + ", " + d[0].toFixed(4);
    } };
    o.xAxis = { type: "value", min: x[0], max: x[1], scale: true, axisLabel: { formatter: function (v) { return v.toFixed(2) + "°E"; } } };
    o.yAxis = { type: "value", min: y[0], max: y[1], scale: true, axisLabel: { formatter: function (v) { return v.toFixed(2) + "°N"; } } };
    o.series = [{ type: "scatter", symbolSize: 7, data: spec.points, itemStyle: { opacity: 0.7 } }];
    return o;
  }

  function heatOption(spec) {
    var o = base();
    o.grid.top = 8; o.grid.bottom = 36;
    o.tooltip = { trigger: "item", confine: true, formatter: function (p) {
      return spec.rows[p.data[1]] + " · " + spec.columns[p.data[0]] + ": " + p.data[2];
    } };
    o.xAxis = { type: "category", data: spec.columns, splitArea: { show: true }, axisLabel: { interval: 0, rotate: 30 } };
    o.yAxis = { type: "category", data: spec.rows, splitArea: { show: true }, axisLabel: { width: 90, overflow: "truncate" } };
    o.visualMap = { min: 0, max: spec.max, calculable: false, orient: "horizontal", left: "center", bottom: 0,
                    itemHeight: 80, itemWidth: 10, inRange: { color: ["#eef4fb", "#0b5cad"] } };
    o.series = [{ type: "heatmap", data: spec.data, label: { show: true, fontSize: 10 } }];
    return o;
  }

  var charts = [];

  function draw() {
    var source = document.getElementById("fig-data");
    if (!source || !window.echarts) { return; }
    var specs = JSON.parse(source.textContent);
    charts.forEach(function (c) { c.dispose(); });
    charts = [];
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var spec = specs[el.getAttribute("data-chart")];
      if (!spec) { return; }
      var chart = window.echarts.init(el, null, { renderer: "canvas" });
      chart.setOption(spec.kind === "map" ? mapOption(spec) : spec.kind === "heatmap" ? heatOption(spec) : option(spec));
      el.setAttribute("data-drawn", "true");
      charts.push(chart);
    });
  }

  /* Live dashboards: a change on the page's stream (the hidden #fig-bell listens to it) has
     the figures re-read once, data-refresh-s seconds later, whatever else changes meanwhile
     (those changes are in that read). The same URL, so the same filters; only #fig-live is
     swapped, and its charts drawn again. A tab in the background waits until it is shown. */
  var due = null;
  var pending = false;

  function refresh() {
    due = null;
    if (document.hidden) { pending = true; return; }
    pending = false;
    var live = document.getElementById("fig-live");
    if (!live || !window.htmx) { return; }
    window.htmx.ajax("GET", window.location.pathname + window.location.search, {
      target: "#fig-live", select: "#fig-live", swap: "outerHTML"
    });
  }

  document.addEventListener("htmx:sseMessage", function (event) {
    if (!event.target || event.target.id !== "fig-bell" || due) { return; }
    var live = document.getElementById("fig-live");
    var seconds = live ? Number(live.getAttribute("data-refresh-s")) || 30 : 30;
    due = window.setTimeout(refresh, seconds * 1000);
  });
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && pending) { refresh(); }
  });
  document.addEventListener("htmx:afterSettle", function () {
    if (document.querySelector("#fig-live [data-chart]:not([data-drawn])")) { draw(); }
  });
  window.addEventListener("resize", function () {
    charts.forEach(function (c) { c.resize(); });
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();
