// Steering view: judge trait score and coherence against the coefficient (per steered layer set),
// the chosen best step, and every answer beside the unsteered baseline.
(function (TI) {
  'use strict';
  TI.views = TI.views || [];
  const state = { trait: 0, config: null };

  function curves(data, column) {
    const baseline = data.configs.find((c) => c.kind === 'baseline');
    const groups = {};
    for (const c of data.configs) {
      if (c.kind === 'baseline') continue;
      (groups[c.layers] = groups[c.layers] || []).push(c);
    }
    if (!Object.keys(groups).length && baseline) groups[baseline.layers] = [];
    return Object.entries(groups).map(([layers, configs]) => ({
      name: `layer ${layers}`,
      markers: true,
      points: (baseline ? [baseline] : []).concat(configs)
        .sort((a, b) => a.coefficient - b.coefficient).map((c) => [c.coefficient, c[column]]),
    }));
  }

  function scores(answer) {
    return TI.el('div', { class: 'scores' },
      TI.el('span', { class: 'chip' }, 'trait ' + TI.fmt(answer && answer.trait, 1)),
      TI.el('span', { class: 'chip' }, 'coherence ' + TI.fmt(answer && answer.coherence, 1)));
  }

  function browser(data, config) {
    const steered = data.answers[config.id] || [];
    const baseline = Object.fromEntries((data.answers.baseline || []).map((a) => [a.q, a]));
    const rows = steered.map((a) => TI.el('tr', { class: 'answer-row' },
      TI.el('td', { class: 'question' }, data.questions[a.q]),
      TI.el('td', { class: 'answer' }, TI.el('div', { class: 'text' }, a.response), scores(a)),
      TI.el('td', { class: 'answer baseline' }, TI.el('div', { class: 'text' }, (baseline[a.q] || {}).response || '–'), scores(baseline[a.q]))));
    return TI.el('table', { class: 'data answers' },
      TI.el('thead', {}, TI.el('tr', {}, TI.el('th', {}, 'question'),
        TI.el('th', {}, `steered (layer ${config.layers}, coefficient ${TI.fmt(config.coefficient, 2)})`),
        TI.el('th', {}, 'baseline (unsteered)'))),
      TI.el('tbody', {}, rows));
  }

  async function render(main, index) {
    const entry = index.steering[state.trait] || index.steering[0];
    const data = await TI.load(entry.key);
    const steps = data.configs.filter((c) => c.kind !== 'baseline');
    const best = steps.find((c) => c.best);
    const config = steps.find((c) => c.id === state.config) || best || steps[0] || data.configs[0];
    const b = data.best;
    const controls = TI.el('div', { class: 'controls' },
      TI.select('trait', index.steering.map((e, i) => [i, e.trait]), state.trait, (v) => { state.trait = Number(v); state.config = null; TI.show('steering'); }));
    const list = TI.el('dl', { class: 'summary-list' });
    for (const [k, v] of [
      ['layers', (b.layers || []).join(', ')], ['method / site', `${b.method} / ${b.site}`],
      ['coefficient', `${TI.fmt(b.coefficient, 2)} (ratio ${TI.fmt(b.ratio, 3)} of the mean ‖h‖)`],
      ['trait score', `${TI.fmt(b.trait_mean, 1)} (baseline ${TI.fmt(b.baseline_trait_mean, 1)}, Δ ${TI.fmt(b.delta, 1)})`],
      ['coherence', `${TI.fmt(b.coherence_mean, 1)} (baseline ${TI.fmt(b.baseline_coherence_mean, 1)}; threshold ${TI.fmt(data.min_coherence, 0)})`],
      ['valid', b.valid ? 'yes' : 'no: no step reached the coherence threshold; the most coherent step is shown'],
    ]) list.append(TI.el('dt', {}, k), TI.el('dd', {}, v));
    const charts = TI.el('div', { class: 'charts' });
    const mark = best ? [{ x: best.coefficient, label: 'best' }] : [];
    TI.lineChart(charts, {
      title: 'Trait score vs coefficient', xLabel: 'coefficient (0 = baseline)', yLabel: 'judge trait score',
      series: curves(data, 'trait_mean'), marks: mark.map((m) => Object.assign({ y: best.trait_mean }, m)), legend: true,
    });
    TI.lineChart(charts, {
      title: 'Coherence vs coefficient', xLabel: 'coefficient (0 = baseline)', yLabel: 'judge coherence',
      series: curves(data, 'coherence_mean'), hlines: [{ y: data.min_coherence, label: `min coherence ${data.min_coherence}`, cls: 'threshold' }],
      marks: mark.map((m) => Object.assign({ y: best.coherence_mean }, m)), legend: true,
    });
    const picker = TI.select('step', steps.map((c) => [c.id, `layer ${c.layers} · coef ${TI.fmt(c.coefficient, 2)} · trait ${TI.fmt(c.trait_mean, 1)} · coherence ${TI.fmt(c.coherence_mean, 1)}${c.best ? ' · best' : ''}`]),
      config.id, (v) => { state.config = v; TI.show('steering'); });
    TI.fill(main, controls,
      TI.section(`${data.trait}: the chosen step`, list),
      TI.section('Judge scores by coefficient', charts),
      TI.section('Responses', TI.el('div', { class: 'controls' }, picker), browser(data, config)));
    TI.rendered(main, 'steering');
  }

  TI.views.push({ id: 'steering', title: 'Steering', available: (index) => index.steering.length > 0, render });
})(window.TI);
