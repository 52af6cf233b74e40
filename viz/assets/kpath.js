// kpath HTML export: filtering by flow and packet, hover details.
// Inlined at export time; reads the event data from the JSON script tag.
// The URL hash drives the filter (#flow=1&step=4) so that a link or a test
// can set it; #...&selftest=1 writes a JSON report into #kpath-selftest.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("kpath-data").textContent);
  var flowSel = document.getElementById("f-flow");
  var stepSel = document.getElementById("f-step");
  var status = document.getElementById("f-status");
  var details = document.getElementById("details-body");
  var arrows = Array.prototype.slice.call(document.querySelectorAll("#diagram .kp_arrow"));
  var rows = Array.prototype.slice.call(document.querySelectorAll("#lat tbody tr"));

  function classNum(el, prefix) {
    var cls = (el.getAttribute("class") || "").split(/\s+/);
    for (var i = 0; i < cls.length; i++) {
      if (cls[i].indexOf(prefix) === 0) { return parseInt(cls[i].slice(prefix.length), 10); }
    }
    return null;
  }

  function related(stepId) {
    // a packet, the send that sent it and the reads that copied its bytes
    var out = {};
    out[stepId] = true;
    var st = data.steps[String(stepId)];
    if (st && st.packet) {
      if (st.packet.sent_by !== null) { out[st.packet.sent_by] = true; }
      st.packet.read_by.forEach(function (m) { out[m] = true; });
    }
    return out;
  }

  function readHash() {
    var out = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      if (!kv) { return; }
      var p = kv.split("=");
      out[decodeURIComponent(p[0])] = decodeURIComponent(p[1] || "");
    });
    return out;
  }

  function apply(flow, step) {
    var want = step !== null ? related(step) : null;
    var lit = 0, litSteps = {};
    arrows.forEach(function (el) {
      var f = classNum(el, "kp_flow_"), s = classNum(el, "kp_step_");
      var ok = (flow === null || f === flow) && (want === null || want[s] === true);
      el.classList.toggle("dim", !ok);
      if (ok) { lit += 1; litSteps[s] = true; }
    });
    var shown = 0;
    rows.forEach(function (tr) {
      var f = parseInt(tr.getAttribute("data-flow"), 10);
      var s = parseInt(tr.getAttribute("data-step"), 10);
      var ok = (flow === null || f === flow) && (step === null || s === step);
      tr.style.display = ok ? "" : "none";
      tr.classList.toggle("sel", step !== null && s === step);
      if (ok) { shown += 1; }
    });
    status.textContent = (flow === null && step === null) ? "showing everything" :
      "highlighting " + lit + " of " + arrows.length + " arrows, " + shown + " of " +
      rows.length + " packets";
    if (want !== null) {
      var first = arrows.filter(function (el) { return !el.classList.contains("dim"); })[0];
      if (first && first.scrollIntoView) { first.scrollIntoView({block: "center"}); }
    }
    return {lit: lit, litSteps: Object.keys(litSteps).map(Number).sort(function (a, b) {
      return a - b; }), shown: shown, want: want};
  }

  function fromHash() {
    var h = readHash();
    var flow = h.flow ? parseInt(h.flow, 10) : null;
    var step = h.step ? parseInt(h.step, 10) : (h.packet ? parseInt(h.packet, 10) : null);
    flowSel.value = flow === null ? "" : String(flow);
    stepSel.value = step === null ? "" : String(step);
    var res = apply(flow, step);
    if (h.selftest) { selftest(flow, step, res); }
  }

  function setHash() {
    var parts = [];
    if (flowSel.value) { parts.push("flow=" + flowSel.value); }
    if (stepSel.value) { parts.push("step=" + stepSel.value); }
    location.hash = parts.join("&");
  }

  function row(k, v) {
    if (v === null || v === undefined || v === "") { return ""; }
    var tr = document.createElement("tr");
    var a = document.createElement("td"), b = document.createElement("td");
    a.textContent = k; b.textContent = String(v);
    tr.appendChild(a); tr.appendChild(b);
    return tr.outerHTML;
  }

  function show(el) {
    var id = el.getAttribute("id") || "";
    var m = /^(ev|wk|by)(\d+)/.exec(id);
    if (!m) { return false; }
    var ev = data.events[m[2]];
    if (!ev) { return false; }
    var st = data.steps[String(ev.step)];
    var what = {wk: "wake-up of ", by: "bytes sent with "}[m[1]] || "";
    var html = "<h2>" + what + "event #" + ev.index + "</h2>" +
      "<table>" + row("function", ev.probe + (ev.kind === "return" ? " (return)" : "")) +
      row("time", "+" + (ev.offset_ns / 1e6).toFixed(6) + " ms") +
      row("since previous", ev.hop_ns === null ? "" : (ev.hop_ns / 1e3).toFixed(3) + " us") +
      row("details", ev.details) + row("side", ev.side) + row("layer", ev.layer) +
      row("context", ev.context) + row("cpu", ev.cpu) + row("hand-off", ev.handoff ? "yes" : "") +
      row("step", st ? "#" + st.id + " " + st.title : ev.step) + row("flow", ev.flow) +
      row("sk", ev.sk ? "0x" + ev.sk.toString(16) : "") +
      row("skb", ev.skb ? "0x" + ev.skb.toString(16) : "") +
      row("seq", ev.seq) + row("end_seq", ev.end_seq) + row("ack", ev.ack) +
      row("length", ev.length) + row("ret", ev.ret) + "</table>";
    details.innerHTML = html;
    return true;
  }

  function selftest(flow, step, res) {
    var report = {flow: flow, step: step, arrows_total: arrows.length, arrows_lit: res.lit,
                  lit_steps: res.litSteps, rows_total: rows.length, rows_visible: res.shown};
    var target = arrows.filter(function (el) { return !el.classList.contains("dim"); })[0];
    report.hover = target ? (target.dispatchEvent(new MouseEvent("mouseover", {bubbles: true})),
                             details.textContent.indexOf("event #") >= 0) : false;
    var out = document.getElementById("kpath-selftest");
    out.textContent = JSON.stringify(report);
  }

  arrows.forEach(function (el) {
    el.addEventListener("mouseover", function () {
      show(el);
      el.classList.add("hot");
    });
    el.addEventListener("mouseout", function () { el.classList.remove("hot"); });
  });
  rows.forEach(function (tr) {
    tr.addEventListener("click", function () {
      flowSel.value = tr.getAttribute("data-flow");
      stepSel.value = tr.getAttribute("data-step");
      setHash();
    });
  });
  flowSel.addEventListener("change", setHash);
  stepSel.addEventListener("change", setHash);
  document.getElementById("f-clear").addEventListener("click", function () {
    flowSel.value = ""; stepSel.value = ""; setHash();
  });
  var zoom = 1;
  var svg = document.querySelector("#diagram svg");
  function setZoom(z) {
    if (!svg) { return; }
    zoom = z;
    svg.style.transformOrigin = "0 0";
    svg.style.width = (svg.viewBox.baseVal.width * zoom) + "px";
    svg.style.height = (svg.viewBox.baseVal.height * zoom) + "px";
  }
  document.getElementById("z-in").addEventListener("click", function () { setZoom(zoom * 1.25); });
  document.getElementById("z-out").addEventListener("click", function () { setZoom(zoom / 1.25); });
  document.getElementById("z-fit").addEventListener("click", function () {
    var box = document.getElementById("diagram").clientWidth - 4;
    if (svg) { setZoom(box / svg.viewBox.baseVal.width); }
  });
  window.addEventListener("hashchange", fromHash);
  setZoom(1);
  fromHash();
}());
