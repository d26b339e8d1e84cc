// The public site (web/pages/public.py): the map of recent requests (vendored echarts, a
// scatter on longitude/latitude axes: no map tiles, nothing fetched from elsewhere) and the
// request form's "use my location" button. Every page works without it.
(function () {
  "use strict";

  function drawMap() {
    var box = document.getElementById("public-map");
    var source = document.getElementById("public-map-data");
    if (!box || !source || typeof echarts === "undefined") return;
    var points = JSON.parse(source.textContent || "[]");
    if (!points.length) {
      box.textContent = box.dataset.empty;
      box.classList.add("pub-map-empty");
      return;
    }
    var lons = points.map(function (p) { return p.value[0]; });
    var lats = points.map(function (p) { return p.value[1]; });
    var pad = 0.02;
    var chart = echarts.init(box);
    chart.setOption({
      animation: false,
      grid: { left: 48, right: 16, top: 16, bottom: 36 },
      tooltip: {
        formatter: function (p) {
          var d = p.data;
          var esc = function (s) { return String(s).replace(/[&<>"]/g, function (c) {
            return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; }); };
          return esc(d.name) + "<br>" + esc(d.date) + " · " + esc(d.status);
        }
      },
      xAxis: { type: "value", scale: true, min: Math.min.apply(null, lons) - pad,
        max: Math.max.apply(null, lons) + pad, axisLabel: { formatter: "{value}°" },
        splitLine: { lineStyle: { color: "#e3e7ee" } } },
      yAxis: { type: "value", scale: true, min: Math.min.apply(null, lats) - pad,
        max: Math.max.apply(null, lats) + pad, axisLabel: { formatter: "{value}°" },
        splitLine: { lineStyle: { color: "#e3e7ee" } } },
      series: [{ type: "scatter", symbolSize: 12, itemStyle: { color: "#b4231b", opacity: 0.75 },
        data: points }]
    });
    window.addEventListener("resize", function () { chart.resize(); });
  }

  function locateButton() {
    var button = document.getElementById("use-location");
    if (!button || !navigator.geolocation) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.geolocation.getCurrentPosition(function (pos) {
        var form = button.form;
        form.latitude.value = pos.coords.latitude.toFixed(5);
        form.longitude.value = pos.coords.longitude.toFixed(5);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawMap();
    locateButton();
  });
})();
