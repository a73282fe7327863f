// Extraction view: per trait, layer x method heatmaps of held-out accuracy and Cohen's d; the best vectors.
(function (TI) {
  'use strict';
  TI.views = TI.views || [];
  const state = { trait: 0, site: null };

  function grid(data, site, column) {
    const at = {};
    for (const row of data.rows) {
      const r = Object.fromEntries(data.columns.map((c, i) => [c, row[i]]));
      if (r.site === site) at[r.method + '|' + r.layer] = r;
    }
    return data.methods.map((method) => data.layers.map((layer) => {
      const r = at[method + '|' + layer];
      return r ? r[column] : null;
    }));
  }

  function vectorTable(rows) {
    return TI.table([
      { key: 'rank', label: '#' }, { key: 'site', label: 'site' }, { key: 'method', label: 'method' },
      { key: 'layer', label: 'layer' }, { key: 'val_accuracy', label: 'val accuracy', fmt: (v) => TI.fmt(v, 3) },
      { key: 'cohens_d', label: "Cohen's d", fmt: (v) => TI.fmt(v, 2) },
      { key: 'polarity_correct', label: 'polarity', fmt: (v) => (v ? 'correct' : 'flipped') },
      { key: 'p_value', label: 'p', fmt: (v) => TI.fmt(v, 4) },
      { key: 'midpoint', label: 'train midpoint', fmt: (v) => TI.fmt(v, 3) },
    ], rows.map((r, i) => Object.assign({ rank: i + 1 }, r)));
  }

  async function render(main, index) {
    const entry = index.extraction[state.trait] || index.extraction[0];
    const data = await TI.load(entry.key);
    const site = data.sites.includes(state.site) ? state.site : (data.sites.includes('residual') ? 'residual' : data.sites[0]);
    const controls = TI.el('div', { class: 'controls' },
      TI.select('trait', index.extraction.map((e, i) => [i, e.trait]), state.trait, (v) => { state.trait = Number(v); TI.show('extraction'); }),
      TI.select('site', data.sites, site, (v) => { state.site = v; TI.show('extraction'); }));
    const acc = grid(data, site, 'val_accuracy');
    const d = grid(data, site, 'cohens_d');
    const maxD = Math.max(1e-9, ...d.flat().filter((v) => v !== null).map(Math.abs));
    const maps = TI.el('div', { class: 'charts' });
    TI.heatmap(maps, {
      title: `Held-out accuracy (${site})`, rows: data.methods, cols: data.layers.map(String), values: acc, colLabel: 'layer',
      color: (v) => TI.sequential(v, 0.5, 1), format: (v) => v.toFixed(2),
      tip: (i, j, v) => `${data.methods[i]}, layer ${data.layers[j]}: accuracy ${TI.fmt(v, 3)}`,
    });
    TI.heatmap(maps, {
      title: `Effect size, Cohen's d (${site})`, rows: data.methods, cols: data.layers.map(String), values: d, colLabel: 'layer',
      color: (v) => TI.diverging(v, maxD), format: (v) => v.toFixed(1),
      tip: (i, j, v) => `${data.methods[i]}, layer ${data.layers[j]}: d = ${TI.fmt(v, 2)}`,
    });
    const perMethod = data.methods.map((m) => data.best_by_method[site + '/' + m]).filter(Boolean);
    TI.fill(main, controls,
      TI.section(`${data.trait}: vectors by layer and method`, maps,
        TI.el('p', { class: 'note' }, 'Accuracy on held-out pairs with the threshold at the midpoint of the train projections; '
          + 'd is signed (positive minus negative, pooled SD). Colour scale: accuracy 0.5 (white) to 1 (blue); d red (negative) to blue (positive).')),
      TI.section('Best vectors (random baseline excluded)', vectorTable(data.best)),
      TI.section(`Best layer per method (${site})`, vectorTable(perMethod)));
    TI.rendered(main, 'extraction');
  }

  TI.views.push({ id: 'extraction', title: 'Extraction', available: (index) => index.extraction.length > 0, render });
})(window.TI);
