// Sweep view: per trait and method, layer (and window) x ratio heatmaps of the trait delta and of
// coherence, coherent cells outlined; a click shows that cell's answers beside the baseline's.
(function (TI) {
  'use strict';
  TI.views = TI.views || [];
  const state = { trait: 0, method: null, config: null };

  function comparison(data) {
    return TI.table([
      { key: 'method', label: 'method' },
      { key: 'delta', label: 'best coherent Δ trait', fmt: (v) => TI.fmt(v, 1) },
      { key: 'layers', label: 'layer(s)', fmt: (v) => (v === null ? 'none coherent' : v) },
      { key: 'ratio', label: 'ratio', fmt: (v) => TI.fmt(v, 2) },
      { key: 'coherence', label: 'coherence', fmt: (v) => TI.fmt(v, 1) },
      { key: 'side_effect', label: 'side effect (KL)', fmt: (v) => TI.fmt(v, 4) },
      { key: 'composite', label: 'composite', fmt: (v) => TI.fmt(v, 3) },
      { key: 'best_steering_layer', label: 'best steering layer', fmt: (v) => (v === null ? '–' : v) },
      { key: 'best_extraction_layer', label: 'best extraction layer', fmt: (v) => (v === null ? '–' : v) },
      { key: 'r_cohens_d', label: "r(d, Δ) across layers", fmt: (v) => TI.fmt(v, 2) },
      { key: 'r_val_accuracy', label: 'r(acc, Δ)', fmt: (v) => TI.fmt(v, 2) },
    ], data.comparison, { class: 'data comparison' });
  }

  function cellInfo(data, grid, i, j) {
    const ratio = data.ratios[j];
    const label = data.rows[i].includes('-') ? `layers ${data.rows[i]}` : `layer ${data.rows[i]}`;
    return `${label}, ratio ${ratio}: Δ ${TI.fmt(grid.delta[i][j], 1)}, coherence ${TI.fmt(grid.coherence_mean[i][j], 1)}`
      + `, KL ${TI.fmt(grid.side_effect[i][j], 4)}${grid.coherent[i][j] ? ' (coherent)' : ''}`;
  }

  function maps(data, method) {
    const grid = data.grids[method];
    const pick = (i, j) => { state.method = method; state.config = grid.config[i][j]; TI.show('sweep'); };
    const outline = (i, j) => grid.coherent[i][j] === true;
    const selected = (i, j) => state.method === method && grid.config[i][j] === state.config;
    const maxAbs = Math.max(1e-9, ...grid.delta.flat().filter((v) => v !== null).map(Math.abs));
    const box = TI.el('div', { class: 'charts', dataset: { method } });
    const common = { rows: data.rows, cols: data.ratios.map(String), colLabel: 'ratio (coef · ‖v‖ / mean ‖h‖)',
      outline, selected, onClick: pick };
    TI.heatmap(box, Object.assign({
      title: `${method} · Δ trait`, values: grid.delta, color: (v) => TI.diverging(v, maxAbs),
      format: (v) => v.toFixed(1), tip: (i, j) => cellInfo(data, grid, i, j),
    }, common));
    TI.heatmap(box, Object.assign({
      title: `${method} · coherence`, values: grid.coherence_mean, color: (v) => TI.sequential(v, 0, 100),
      format: (v) => v.toFixed(0), tip: (i, j) => cellInfo(data, grid, i, j),
    }, common));
    return box;
  }

  async function answers(data, method, config) {
    const page = await TI.load(data.answers[data.methods.indexOf(method)]);
    const steered = page[String(config)] || [];
    const baseline = Object.fromEntries(data.baseline_answers.map((a) => [a.q, a]));
    const chips = (a) => TI.el('div', { class: 'scores' },
      TI.el('span', { class: 'chip' }, 'trait ' + TI.fmt(a && a.trait, 1)),
      TI.el('span', { class: 'chip' }, 'coherence ' + TI.fmt(a && a.coherence, 1)),
      a && a.relevance !== null && a.relevance !== undefined ? TI.el('span', { class: 'chip' }, 'relevance ' + TI.fmt(a.relevance, 1)) : null);
    const rows = steered.map((a) => TI.el('tr', { class: 'answer-row' },
      TI.el('td', { class: 'question' }, data.questions[a.q]),
      TI.el('td', { class: 'answer' }, TI.el('div', { class: 'text' }, a.response), chips(a)),
      TI.el('td', { class: 'answer baseline' }, TI.el('div', { class: 'text' }, (baseline[a.q] || {}).response || '–'), chips(baseline[a.q]))));
    return TI.el('table', { class: 'data answers sweep-answers' },
      TI.el('thead', {}, TI.el('tr', {}, TI.el('th', {}, 'question'), TI.el('th', {}, 'steered'), TI.el('th', {}, 'baseline (unsteered)'))),
      TI.el('tbody', {}, rows));
  }

  function where(data, method, config) {
    const grid = data.grids[method];
    for (let i = 0; i < data.rows.length; i++) {
      for (let j = 0; j < data.ratios.length; j++) if (grid.config[i][j] === config) return [i, j];
    }
    return null;
  }

  async function render(main, index) {
    const entry = index.sweep[state.trait] || index.sweep[0];
    const data = await TI.load(entry.key);
    if (!data.methods.includes(state.method)) {
      const best = data.comparison.find((c) => c.config !== null);
      state.method = best ? best.method : data.methods[0];
      state.config = best ? best.config : data.grids[state.method].config[0][0];
    }
    const controls = TI.el('div', { class: 'controls' },
      TI.select('trait', index.sweep.map((e, i) => [i, e.trait]), state.trait, (v) => { state.trait = Number(v); state.method = null; TI.show('sweep'); }));
    const grids = data.methods.map((m) => maps(data, m));
    const cell = where(data, state.method, state.config);
    const heading = cell ? `Answers: ${state.method}, ${cellInfo(data, data.grids[state.method], cell[0], cell[1])}` : 'Answers';
    TI.fill(main, controls,
      TI.section(`${data.trait}: best coherent steering per method (${data.site})`, comparison(data),
        TI.el('p', { class: 'note' }, `Baseline trait ${TI.fmt(data.baseline.trait, 1)}, coherence ${TI.fmt(data.baseline.coherence, 1)}; `
          + `coherent = coherence ≥ ${TI.fmt(data.min_coherence, 0)}. Δ is the trait score minus the baseline's; the best is the largest Δ in the trait's direction among coherent cells.`)),
      TI.section('Layer × ratio (windows below the single layers): outlined cells are coherent; click a cell for its answers', ...grids),
      TI.section(heading, await answers(data, state.method, state.config)));
    TI.rendered(main, 'sweep');
  }

  TI.views.push({ id: 'sweep', title: 'Sweep', available: (index) => (index.sweep || []).length > 0, render });
})(window.TI);
