// The leaderboard page's behaviour: filters, sorting and the accuracy-against-cost plot.
// Plain JavaScript inlined into the page (no library, no network). Every number shown in the
// table was formatted by Python; this script only shows, hides and reorders rows and columns,
// and draws the plot from the cells' data-value attributes.
(function () {
  "use strict";
  const board = document.getElementById("board");
  const heads = Array.from(board.tHead.rows[0].cells);
  const body = board.tBodies[0];
  const rows = Array.from(body.rows);
  const filters = Array.from(document.querySelectorAll("select[data-filter]"));
  const xaxis = document.getElementById("xaxis");
  const plot = document.getElementById("plot");
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3",
                  "#8C8C8C", "#CCB974", "#64B5CD"];
  const AXES = {train: "training wall seconds per run", params: "trainable parameters",
                eval: "evaluation ms per test example"};
  let sorted = null;  // {index, dir} of the column the rows are sorted by

  function chosen() {
    const out = {};
    filters.forEach(function (s) { out[s.dataset.filter] = s.value; });
    return out;
  }

  function number(cell) {
    const v = cell.dataset.value;
    return v === undefined || v === "" ? null : parseFloat(v);
  }

  function apply() {
    const f = chosen();
    heads.forEach(function (th, i) {
      if (th.dataset.family === undefined) return;
      const show = f.family === "all" || th.dataset.family === f.family;
      th.hidden = !show;
      rows.forEach(function (tr) { tr.cells[i].hidden = !show; });
    });
    let shown = 0;
    rows.forEach(function (tr) {
      const d = tr.dataset;
      let show = (f.model === "all" || d.model === f.model) &&
        (f.selection === "all" || d.selection === f.selection || d.selection === "none") &&
        (f.convention === "all" || d.convention === f.convention);
      const mean = tr.querySelector("td.mean");
      const m = JSON.parse(mean.dataset.means)[f.family];
      if (m) {
        mean.textContent = m[1];
        mean.dataset.value = m[0];
      } else {
        show = false;  // no score among the targets shown
      }
      tr.hidden = !show;
      if (show) shown += 1;
    });
    document.getElementById("shown").textContent = shown + " of " + rows.length + " rows shown";
    if (sorted) order();
    draw();
  }

  function order() {
    const i = sorted.index;
    const text = heads[i].dataset.kind === "text";
    const keyed = rows.map(function (tr, n) { return {tr: tr, n: n, cell: tr.cells[i]}; });
    keyed.sort(function (a, b) {
      let c;
      if (text) {
        c = a.cell.textContent.localeCompare(b.cell.textContent) * sorted.dir;
      } else {
        const x = number(a.cell), y = number(b.cell);
        if (x === null || y === null) return (x === null) - (y === null) || a.n - b.n;  // missing last
        c = (x - y) * sorted.dir;
      }
      return c || a.n - b.n;
    });
    keyed.forEach(function (k) { body.appendChild(k.tr); });
  }

  function sortBy(i) {
    const kind = heads[i].dataset.kind;
    const first = kind === "text" || kind === "cost" ? 1 : -1;  // scores: best first
    sorted = {index: i, dir: sorted && sorted.index === i ? -sorted.dir : first};
    heads.forEach(function (th, j) {
      if (j === i) th.setAttribute("aria-sort", sorted.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    order();
  }

  function ticks(max) {  // about five round steps from 0 to at least max
    const raw = max / 5 || 1;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(function (m) { return m * p; }).find(function (s) { return s >= raw; });
    const out = [];
    for (let v = 0; v <= max + step / 2; v += step) out.push(v);
    if (out[out.length - 1] < max) out.push(out[out.length - 1] + step);
    return out;
  }

  function label(v) {
    if (v >= 1e6) return (v / 1e6) + "M";
    if (v >= 1e3) return (v / 1e3) + "k";
    return String(Math.round(v * 100) / 100);
  }

  function el(name, attrs, text) {
    const e = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    plot.appendChild(e);
    return e;
  }

  function draw() {
    while (plot.firstChild) plot.removeChild(plot.firstChild);
    const W = +plot.getAttribute("width"), H = +plot.getAttribute("height");
    const L = 60, R = 170, T = 15, B = 45;
    const key = xaxis.value;
    const methods = [];
    const points = [];
    rows.forEach(function (tr) {
      if (tr.hidden) return;
      const x = number(tr.querySelector("td.cost." + key));
      const y = number(tr.querySelector("td.mean"));
      if (x === null || y === null) return;
      if (methods.indexOf(tr.dataset.method) < 0) methods.push(tr.dataset.method);
      points.push({x: x, y: 100 * y, tr: tr});
    });
    const xs = ticks(Math.max.apply(null, points.map(function (p) { return p.x; }).concat([0])));
    const xmax = xs[xs.length - 1] || 1;
    const px = function (v) { return L + (W - L - R) * v / xmax; };
    const py = function (v) { return H - B - (H - T - B) * v / 100; };
    [0, 20, 40, 60, 80, 100].forEach(function (v) {
      el("line", {x1: L, x2: W - R, y1: py(v), y2: py(v), stroke: "#e3e3e3"});
      el("text", {x: L - 6, y: py(v) + 4, "text-anchor": "end"}, String(v));
    });
    xs.forEach(function (v) {
      el("line", {x1: px(v), x2: px(v), y1: T, y2: H - B, stroke: "#e3e3e3"});
      el("text", {x: px(v), y: H - B + 15, "text-anchor": "middle"}, label(v));
    });
    el("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#333"});
    el("text", {x: L + (W - L - R) / 2, y: H - 8, "text-anchor": "middle"}, AXES[key]);
    el("text", {x: 14, y: T + (H - T - B) / 2, "text-anchor": "middle",
                transform: "rotate(-90 14 " + (T + (H - T - B) / 2) + ")"}, "mean accuracy (%)");
    if (!points.length) {
      el("text", {x: L + 20, y: T + 30}, "No row shown records this cost.");
    }
    points.forEach(function (p) {
      const d = p.tr.dataset;
      const c = el("circle", {cx: px(p.x), cy: py(p.y), r: 5, fill: COLORS[methods.indexOf(d.method) % COLORS.length],
                              "fill-opacity": 0.8, stroke: "#222", "stroke-width": 0.5});
      const t = document.createElementNS(SVG, "title");
      t.textContent = d.run + ": " + d.model + ", " + d.method + " (" + d.selection + ", " + d.convention +
        "): " + p.tr.querySelector("td.mean").textContent + " at " + label(p.x);
      c.appendChild(t);
    });
    methods.forEach(function (m, i) {
      el("circle", {cx: W - R + 20, cy: T + 12 + 18 * i, r: 5, fill: COLORS[i % COLORS.length]});
      el("text", {x: W - R + 30, y: T + 16 + 18 * i}, m);
    });
  }

  heads.forEach(function (th, i) {
    th.addEventListener("click", function () { sortBy(i); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortBy(i); });
  });
  filters.forEach(function (s) { s.addEventListener("change", apply); });
  xaxis.addEventListener("change", draw);
  apply();
})();
