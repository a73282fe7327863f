// Model diff view: variant B replayed on variant A's tokens; per trait and layer the effect size
// (B minus A) and the cosine of the mean activation shift with each vector; the clauses that moved most.
(function (TI) {
  'use strict';
  TI.views = TI.views || [];
  const state = { trait: null, layer: null };

  function byTrait(rows, column) {
    const groups = {};
    for (const r of rows) (groups[r.trait] = groups[r.trait] || []).push([r.layer, r[column]]);
    return Object.entries(groups).map(([trait, points]) => ({ name: trait, markers: true, points: points.sort((a, b) => a[0] - b[0]) }));
  }

  function clauseList(items, cls) {
    if (!items.length) return TI.el('p', { class: 'note' }, 'none');
    return TI.el('ol', { class: 'clauses ' + cls }, items.map((c) => TI.el('li', {},
      TI.el('span', { class: 'chip delta' }, (c.mean_delta > 0 ? '+' : '') + TI.fmt(c.mean_delta, 3)),
      TI.el('span', { class: 'chip' }, `prompt #${c.prompt_id} · ${c.n_tokens} tokens · max ${TI.fmt(c.max_delta, 2)}`),
      TI.el('div', { class: 'full-text' }, c.text))));
  }

  async function render(main, index) {
    const data = await TI.load(index.model_diff.key);
    const cosine = Object.fromEntries(data.cosines.map((c) => [c.trait + '|' + c.layer, c.cosine]));
    const table = TI.table([
      { key: 'trait', label: 'trait' }, { key: 'layer', label: 'layer' },
      { key: 'mean_a', label: `mean ${data.a}`, fmt: (v) => TI.fmt(v, 3) }, { key: 'mean_b', label: `mean ${data.b}`, fmt: (v) => TI.fmt(v, 3) },
      { key: 'mean_diff', label: 'B − A', fmt: (v) => TI.fmt(v, 3) }, { key: 'paired_d', label: 'paired d', fmt: (v) => TI.fmt(v, 2) },
      { key: 'cohens_d', label: "Cohen's d", fmt: (v) => TI.fmt(v, 2) }, { key: 'p_value', label: 'p (paired t)', fmt: (v) => TI.fmt(v, 4) },
      { key: 'cosine', label: 'cosine(shift, v)', fmt: (v) => TI.fmt(v, 3) }, { key: 'n_prompts', label: 'prompts' },
    ], data.paired.map((r) => Object.assign({ cosine: cosine[r.trait + '|' + r.layer] }, r)), { class: 'data paired' });
    const charts = TI.el('div', { class: 'charts' });
    TI.lineChart(charts, {
      title: "Effect size (Cohen's d, B − A) by layer", xLabel: 'layer', yLabel: "Cohen's d", integerX: true, legend: true,
      series: byTrait(data.paired, 'cohens_d'), hlines: [{ y: 0, cls: 'zero' }],
    });
    TI.lineChart(charts, {
      title: 'Cosine of the mean activation shift with each vector', xLabel: 'layer', yLabel: 'cosine', integerX: true, legend: true,
      series: byTrait(data.cosines, 'cosine'), hlines: [{ y: 0, cls: 'zero' }],
    });
    const traits = Object.keys(data.clauses);
    if (!traits.includes(state.trait)) state.trait = traits[0];
    const layers = state.trait ? Object.keys(data.clauses[state.trait]) : [];
    if (!layers.includes(state.layer)) state.layer = layers[0];
    const top = state.trait ? data.clauses[state.trait][state.layer] : { increase: [], decrease: [] };
    const clauses = TI.section('Clauses by mean per-token delta (B − A)',
      TI.el('div', { class: 'controls' },
        TI.select('trait', traits, state.trait, (v) => { state.trait = v; TI.show('model_diff'); }, { class: 'clause-trait' }),
        TI.select('layer', layers, state.layer, (v) => { state.layer = v; TI.show('model_diff'); }, { class: 'clause-layer' })),
      TI.el('div', { class: 'columns' },
        TI.el('div', {}, TI.el('h3', {}, `Higher in ${data.b}`), clauseList(top.increase, 'increase')),
        TI.el('div', {}, TI.el('h3', {}, `Lower in ${data.b}`), clauseList(top.decrease, 'decrease'))));
    TI.fill(main, 
      TI.section(`${data.b} (B) vs ${data.a} (A), on A's exact response tokens`, table,
        TI.el('p', { class: 'note' }, 'Per trait and projected layer: mean response projection of each variant, the paired difference and effect sizes.')),
      TI.section('By layer', charts),
      clauses);
    TI.rendered(main, 'model_diff');
  }

  TI.views.push({ id: 'model_diff', title: 'Model diff', available: (index) => Boolean(index.model_diff), render });
})(window.TI);
