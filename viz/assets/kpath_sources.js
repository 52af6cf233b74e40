// kpath HTML export of a trace with source lines (kpath trace --vmlinux):
// adds the probed function's file:line to the hover details. Inlined after
// kpath.js only when the trace header has source lines, so that the page of
// any other trace stays byte for byte what it was. With #...&selftest=1 it
// hovers the first highlighted arrow again and adds what the details then
// show as "source" to the report in #kpath-selftest.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("kpath-data").textContent);
  var sources = data.sources || {};
  var details = document.getElementById("details-body");
  var arrows = Array.prototype.slice.call(document.querySelectorAll("#diagram .kp_arrow"));

  function addSource(el) {
    var m = /^ev(\d+)/.exec(el.getAttribute("id") || "");
    var ev = m ? data.events[m[1]] : null;
    var table = details.querySelector("table");
    if (!ev || !table || !sources[ev.probe]) { return; }
    var tr = document.createElement("tr");
    var a = document.createElement("td"), b = document.createElement("td");
    a.textContent = "source"; b.textContent = sources[ev.probe];
    tr.appendChild(a); tr.appendChild(b);
    var rows = table.querySelectorAll("tr");
    rows[0].parentNode.insertBefore(tr, rows[1] || null);  // right after "function"
  }

  arrows.forEach(function (el) {
    el.addEventListener("mouseover", function () { addSource(el); });
  });

  if (/(^#|&)selftest=1(&|$)/.test(location.hash)) {
    var out = document.getElementById("kpath-selftest");
    var report = out.textContent ? JSON.parse(out.textContent) : {};
    var target = arrows.filter(function (el) {
      return !el.classList.contains("dim") && /^ev\d+/.test(el.getAttribute("id") || "");
    })[0];
    report.source = null;
    if (target) {
      target.dispatchEvent(new MouseEvent("mouseover", {bubbles: true}));
      var cells = details.querySelectorAll("td");
      for (var i = 0; i + 1 < cells.length; i++) {
        if (cells[i].textContent === "source") { report.source = cells[i + 1].textContent; }
      }
      report.source_function = details.querySelector("td + td") ?
        details.querySelector("td + td").textContent : null;
    }
    out.textContent = JSON.stringify(report);
  }
}());
