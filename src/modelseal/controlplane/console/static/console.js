// modelseal console: progressive enhancement only; every page works without this file.
// No inline script anywhere (CSP script-src 'self'): data comes in JSON blocks.
"use strict";

// htmx requests carry the session's CSRF token as a header (forms carry it as a field)
document.addEventListener("htmx:configRequest", function (event) {
  var meta = document.querySelector('meta[name="csrf-token"]');
  if (meta && meta.content) {
    event.detail.headers["X-CSRF-Token"] = meta.content;
  }
});

function drawCharts() {
  var block = document.getElementById("chart-data");
  if (!block || typeof window.Chart === "undefined") {
    return;
  }
  var data = JSON.parse(block.textContent);
  var specs = [
    ["chart-licenses", "doughnut", data.licenses, "licenses"],
    ["chart-activations", "bar", data.activations, "activations"],
    ["chart-heartbeats", "line", data.heartbeats, "devices"],
  ];
  specs.forEach(function (spec) {
    var canvas = document.getElementById(spec[0]);
    if (!canvas) {
      return;
    }
    new window.Chart(canvas, {
      type: spec[1],
      data: {
        labels: spec[2].labels,
        datasets: [{ label: spec[3], data: spec[2].values, borderWidth: 1,
                     backgroundColor: spec[1] === "doughnut"
                       ? ["#16692b", "#a3131b", "#8a5a00", "#5b6470", "#0b5cad"]
                       : "#0b5cad" }],
      },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
                 plugins: { legend: { display: spec[1] === "doughnut" } },
                 scales: spec[1] === "doughnut" ? {} : { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    });
    canvas.dataset.drawn = "true";
  });
}

document.addEventListener("DOMContentLoaded", drawCharts);
