// Small DOM helpers shared by the views.
(function (TI) {
  'use strict';

  // el('div', {class: 'x', onclick: fn, dataset: {a: 1}}, child, 'text', ...)
  TI.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else if (name === 'dataset') Object.assign(node.dataset, value);
      else if (name === 'text') node.textContent = value;
      else if (value === true) node.setAttribute(name, '');
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  };

  // A labelled <select>; options are [value, text] pairs or plain values.
  TI.select = function (label, options, value, onChange, attrs) {
    const select = TI.el('select', Object.assign({ onchange: (e) => onChange(e.target.value) }, attrs || {}));
    for (const option of options) {
      const [v, text] = Array.isArray(option) ? option : [option, option];
      select.append(TI.el('option', { value: v, selected: String(v) === String(value) }, text));
    }
    return TI.el('label', { class: 'control' }, TI.el('span', {}, label), select);
  };

  TI.checkbox = function (label, checked, onChange, attrs) {
    const box = TI.el('input', Object.assign({ type: 'checkbox', checked, onchange: (e) => onChange(e.target.checked) }, attrs || {}));
    return TI.el('label', { class: 'control check' }, box, TI.el('span', {}, label));
  };

  TI.fmt = function (x, digits) {
    if (x === null || x === undefined || Number.isNaN(x)) return '–';
    const d = digits === undefined ? 3 : digits;
    return Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(2) : x.toFixed(d);
  };

  // table([{key, label, fmt?, cls?}], rows) -> <table>
  TI.table = function (columns, rows, attrs) {
    const head = TI.el('tr', {}, columns.map((c) => TI.el('th', { scope: 'col' }, c.label)));
    const body = rows.map((row) => TI.el('tr', {}, columns.map((c) => {
      const value = row[c.key];
      const shown = c.fmt ? c.fmt(value, row) : value;
      return TI.el('td', { class: c.cls }, shown instanceof Node ? shown : String(shown === null || shown === undefined ? '–' : shown));
    })));
    return TI.el('table', Object.assign({ class: 'data' }, attrs || {}), TI.el('thead', {}, head), TI.el('tbody', {}, body));
  };

  // parent.replaceChildren without the null/false placeholders of optional parts.
  TI.fill = function (parent, ...children) {
    parent.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return parent;
  };

  TI.section = function (title, ...children) {
    return TI.el('section', { class: 'card' }, TI.el('h2', {}, title), ...children);
  };

  TI.failure = function (parent, error) {
    parent.replaceChildren(TI.el('p', { class: 'error' }, String(error && error.message ? error.message : error)));
  };

  // Marks a view as drawn (tests and people waiting on slow data can rely on it).
  TI.rendered = function (parent, name) {
    parent.dataset.rendered = name;
  };
})(window.TI);
