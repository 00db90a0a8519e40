// uplink console: follows a running operation live (the operation page
// only). The server renders the page; this keeps it current from the
// operation's event stream.
"use strict";
(function () {
  var root = document.getElementById("operation");
  if (!root || !window.EventSource) return;
  var state = document.getElementById("op-state");
  if (state && isDone(state.dataset.state)) return;

  function isDone(s) { return s === "succeeded" || s === "failed"; }

  function duration(step) {
    if (!step.started_at) return "";
    var end = step.finished_at ? Date.parse(step.finished_at) : Date.now();
    var ms = Math.max(0, end - Date.parse(step.started_at));
    if (ms < 10000) return (Math.round(ms / 100) / 10) + "s";
    var s = Math.round(ms / 1000), m = Math.floor(s / 60);
    return m > 0 ? m + "m" + (s % 60) + "s" : s + "s";
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function renderSteps(steps) {
    var ol = document.getElementById("steps");
    var items = ol.querySelectorAll("li[data-step]");
    var same = items.length === steps.length;
    for (var i = 0; same && i < steps.length; i++) same = items[i].dataset.step === steps[i].name;
    if (!same) {
      ol.textContent = "";
      steps.forEach(function (s) {
        var li = el("li", { "data-step": s.name, "data-state": s.state });
        li.appendChild(el("span", { "class": "name" }, s.name));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(el("span", { "class": "step-state" }, s.state));
        li.appendChild(document.createTextNode(" "));
        li.appendChild(el("span", { "class": "duration" }, ""));
        ol.appendChild(li);
      });
      items = ol.querySelectorAll("li[data-step]");
    }
    steps.forEach(function (s, i) {
      var li = items[i];
      li.dataset.state = s.state;
      li.querySelector(".step-state").textContent = s.state;
      li.querySelector(".duration").textContent = duration(s);
    });
  }

  function renderLog(lines) {
    var pre = document.getElementById("log");
    var follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = (lines || []).map(function (l) {
      return (l.at || "").replace(/^.*T(\d\d:\d\d:\d\d).*$/, "$1") + " " + l.line + "\n";
    }).join("");
    if (follow) pre.scrollTop = pre.scrollHeight;
  }

  function renderOutcome(op) {
    var box = document.getElementById("outcome");
    if (document.getElementById("result")) return;
    var result = el("p", { id: "result", "class": op.state }, op.state === "succeeded" ? "Succeeded. " : "Failed. ");
    var back = el("a", { id: "back-to-installation", href: "/ui/installations/" + encodeURIComponent(root.dataset.installation) },
      "Back to " + root.dataset.installation);
    result.appendChild(back);
    box.appendChild(result);
    if (op.error) box.appendChild(el("pre", { id: "error", "class": "error" }, op.error));
    if (op.state === "failed") {
      // On failure the log comes first: it says why.
      var log = document.getElementById("log-section"), steps = document.getElementById("steps-section");
      steps.parentNode.insertBefore(log, steps);
    }
  }

  function render(op) {
    state.textContent = op.state;
    state.dataset.state = op.state;
    state.className = "state state-" + op.state;
    document.getElementById("progress").textContent = op.progress.done + "/" + op.progress.total;
    renderSteps(op.steps || []);
    renderLog(op.log);
    if (isDone(op.state)) renderOutcome(op);
  }

  var last = null;
  // A running step's duration grows between events too.
  var tick = setInterval(function () { if (last) renderSteps(last.steps || []); }, 1000);
  var es = new EventSource(root.dataset.events);
  es.addEventListener("operation", function (ev) {
    last = JSON.parse(ev.data);
    render(last);
    if (isDone(last.state)) {
      es.close();
      clearInterval(tick);
    }
  });
})();
