// Plain SVG charts: a line chart and a heatmap, plus the colour scales. No library, no network.
(function (TI) {
  'use strict';
  const NS = 'http://www.w3.org/2000/svg';
  TI.palette = ['#1f6fb2', '#c8402f', '#2c8a3e', '#7a4fb0', '#d98116', '#138f9c', '#8c564b', '#c2418f', '#666666', '#9a9a1e'];

  function svg(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, String(value));
    }
    if (parent) parent.appendChild(node);
    return node;
  }
  TI.svg = svg;

  function title(node, text) {
    svg('title', {}, node).textContent = text;
  }

  // About `count` round tick values covering [lo, hi].
  function ticks(lo, hi, count) {
    const span = hi - lo;
    const raw = span / Math.max(1, count);
    const step = [1, 2, 2.5, 5, 10].map((m) => m * Math.pow(10, Math.floor(Math.log10(raw)))).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  }

  function tickText(v) {
    const a = Math.abs(v);
    if (a >= 1e4 || (a > 0 && a < 1e-3)) return v.toExponential(1);
    return String(Number(v.toPrecision(4)));
  }

  function domain(values, pad) {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (!Number.isFinite(lo)) return [0, 1];
    if (lo === hi) { lo -= 1; hi += 1; }
    const p = (hi - lo) * (pad || 0);
    return [lo - p, hi + p];
  }

  // lineChart(parent, {title, xLabel, yLabel, series: [{name, points: [[x, y|null]], color?, markers?, line?}],
  //   hlines: [{y, label}], marks: [{x, y, label}], width?, height?, integerX?}) -> <svg>
  // A null y breaks the line; line: false draws only the markers. Each series is one <path class="series" data-series="name">.
  TI.lineChart = function (parent, spec) {
    const width = spec.width || 560, height = spec.height || 300;
    const m = { top: 30, right: 16, bottom: 46, left: 60 };
    const root = svg('svg', { class: 'chart line-chart', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' }, parent);
    title(root, spec.title || 'chart');
    if (spec.title) svg('text', { x: m.left, y: 16, class: 'chart-title' }, root).textContent = spec.title;
    const points = spec.series.flatMap((s) => s.points.filter((p) => p[1] !== null && Number.isFinite(p[1])));
    if (!points.length) {
      svg('text', { x: width / 2, y: height / 2, class: 'empty', 'text-anchor': 'middle' }, root).textContent = 'no data';
      return root;
    }
    const [x0, x1] = domain(points.map((p) => p[0]), 0.02);
    const [y0, y1] = domain(points.map((p) => p[1]).concat((spec.hlines || []).map((h) => h.y)), 0.06);
    const X = (x) => m.left + (x - x0) / (x1 - x0) * (width - m.left - m.right);
    const Y = (y) => height - m.bottom - (y - y0) / (y1 - y0) * (height - m.top - m.bottom);
    const axes = svg('g', { class: 'axes' }, root);
    for (const t of ticks(y0, y1, 5)) {
      svg('line', { x1: m.left, x2: width - m.right, y1: Y(t), y2: Y(t), class: 'grid' }, axes);
      svg('text', { x: m.left - 6, y: Y(t) + 4, 'text-anchor': 'end' }, axes).textContent = tickText(t);
    }
    let xt = ticks(x0, x1, Math.min(8, Math.max(2, Math.floor((width - m.left) / 70))));
    if (spec.integerX) xt = xt.filter((t) => Number.isInteger(t));
    for (const t of xt) {
      svg('line', { x1: X(t), x2: X(t), y1: height - m.bottom, y2: height - m.bottom + 4, class: 'tick' }, axes);
      svg('text', { x: X(t), y: height - m.bottom + 16, 'text-anchor': 'middle' }, axes).textContent = tickText(t);
    }
    svg('line', { x1: m.left, x2: width - m.right, y1: height - m.bottom, y2: height - m.bottom, class: 'axis' }, axes);
    svg('line', { x1: m.left, x2: m.left, y1: m.top, y2: height - m.bottom, class: 'axis' }, axes);
    if (spec.xLabel) svg('text', { x: (m.left + width - m.right) / 2, y: height - 8, 'text-anchor': 'middle', class: 'label' }, axes).textContent = spec.xLabel;
    if (spec.yLabel) {
      svg('text', { x: -(m.top + height - m.bottom) / 2, y: 14, transform: 'rotate(-90)', 'text-anchor': 'middle', class: 'label' }, axes).textContent = spec.yLabel;
    }
    for (const h of spec.hlines || []) {
      const g = svg('g', { class: 'hline ' + (h.cls || '') }, root);
      svg('line', { x1: m.left, x2: width - m.right, y1: Y(h.y), y2: Y(h.y) }, g);
      if (h.label) svg('text', { x: width - m.right - 4, y: Y(h.y) - 4, 'text-anchor': 'end' }, g).textContent = h.label;
    }
    spec.series.forEach((s, i) => {
      const color = s.color || TI.palette[i % TI.palette.length];
      let d = '', pen = false;
      for (const [x, y] of s.points) {
        if (y === null || !Number.isFinite(y)) { pen = false; continue; }
        d += (pen ? 'L' : 'M') + X(x).toFixed(1) + ' ' + Y(y).toFixed(1);
        pen = true;
      }
      const path = svg('path', { d: s.line === false ? '' : d, class: 'series', stroke: color, 'data-series': s.name }, root);
      title(path, s.name);
      if (s.markers) {
        for (const [x, y] of s.points) {
          if (y === null || !Number.isFinite(y)) continue;
          const dot = svg('circle', { cx: X(x), cy: Y(y), r: 3.5, fill: color, class: 'point' }, root);
          title(dot, `${s.name}: ${tickText(x)} → ${tickText(y)}`);
        }
      }
    });
    for (const mark of spec.marks || []) {
      if (mark.y === null || mark.y === undefined) continue;
      const g = svg('g', { class: 'mark' }, root);
      svg('circle', { cx: X(mark.x), cy: Y(mark.y), r: 8 }, g);
      const right = X(mark.x) > width - m.right - 40;  // keep the label inside the plot
      if (mark.label) svg('text', { x: X(mark.x) + (right ? -10 : 10), y: Y(mark.y) - 10, 'text-anchor': right ? 'end' : 'start' }, g).textContent = mark.label;
      title(g, mark.label || '');
    }
    if (spec.series.length > 1 || spec.legend) {
      const legend = svg('g', { class: 'legend' }, root);
      let x = m.left;
      spec.series.forEach((s, i) => {
        const color = s.color || TI.palette[i % TI.palette.length];
        svg('rect', { x, y: 22, width: 10, height: 3, fill: color }, legend);
        const text = svg('text', { x: x + 14, y: 27 }, legend);
        text.textContent = s.name;
        x += 24 + 6.5 * s.name.length;
      });
    }
    return root;
  };

  // heatmap(parent, {title, rows: [label], cols: [label], values: [[v|null]], color: v -> css,
  //   format: v -> text, tip: (r, c, v) -> text, cellWidth?, outline?: (r, c) -> bool,
  //   selected?: (r, c) -> bool, onClick?: (r, c) -> void}) -> <svg>; one <rect class="cell"> per value
  //   (class "outlined" / "selected" / "clickable" where those say so)
  TI.heatmap = function (parent, spec) {
    const cw = spec.cellWidth || Math.max(14, Math.min(46, Math.floor(760 / Math.max(1, spec.cols.length))));
    const ch = 24, left = 12 + 7 * Math.max(...spec.rows.map((r) => r.length)), top = 34, bottom = 30;
    const width = left + cw * spec.cols.length + 10, height = top + ch * spec.rows.length + bottom;
    const root = svg('svg', { class: 'chart heatmap', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' }, parent);
    title(root, spec.title || 'heatmap');
    if (spec.title) svg('text', { x: 4, y: 16, class: 'chart-title' }, root).textContent = spec.title;
    const every = Math.ceil(28 / cw);
    spec.cols.forEach((c, j) => {
      if (j % every === 0) {
        svg('text', { x: left + j * cw + cw / 2, y: top + ch * spec.rows.length + 16, 'text-anchor': 'middle', class: 'axis-text' }, root).textContent = c;
      }
    });
    if (spec.colLabel) svg('text', { x: left + cw * spec.cols.length / 2, y: height - 2, 'text-anchor': 'middle', class: 'label' }, root).textContent = spec.colLabel;
    spec.rows.forEach((r, i) => {
      svg('text', { x: left - 6, y: top + i * ch + ch / 2 + 4, 'text-anchor': 'end', class: 'axis-text' }, root).textContent = r;
      spec.cols.forEach((c, j) => {
        const v = spec.values[i][j];
        const classes = ['cell', v === null ? 'missing' : null, spec.outline && spec.outline(i, j) ? 'outlined' : null,
          spec.selected && spec.selected(i, j) ? 'selected' : null, spec.onClick && v !== null ? 'clickable' : null];
        const cell = svg('rect', {
          x: left + j * cw, y: top + i * ch, width: cw - 1, height: ch - 1, class: classes.filter(Boolean).join(' '),
          fill: v === null ? '#eeeeee' : spec.color(v), 'data-value': v === null ? '' : v,
          'data-row': i, 'data-col': j,
        }, root);
        if (spec.onClick && v !== null) cell.addEventListener('click', () => spec.onClick(i, j));
        title(cell, spec.tip ? spec.tip(i, j, v) : `${r}, ${c}: ${v}`);
        if (v !== null && cw >= 34 && spec.format) {
          svg('text', { x: left + j * cw + cw / 2, y: top + i * ch + ch / 2 + 4, 'text-anchor': 'middle', class: 'cell-text' }, root).textContent = spec.format(v);
        }
      });
    });
    return root;
  };

  function mix(a, b, t) {
    const u = Math.max(0, Math.min(1, t));
    return `rgb(${a.map((x, i) => Math.round(x + (b[i] - x) * u)).join(',')})`;
  }
  const WHITE = [255, 255, 255], BLUE = [31, 100, 178], RED = [200, 64, 47];
  // lo..hi -> white..blue
  TI.sequential = (v, lo, hi) => mix(WHITE, BLUE, (v - lo) / ((hi - lo) || 1));
  // -maxAbs..0..maxAbs -> red..white..blue
  TI.diverging = (v, maxAbs) => (v >= 0 ? mix(WHITE, BLUE, v / (maxAbs || 1)) : mix(WHITE, RED, -v / (maxAbs || 1)));
})(window.TI);
