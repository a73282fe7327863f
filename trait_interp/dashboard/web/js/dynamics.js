// Trait dynamics view: pick a prompt; its response with every token shaded by one trait's projection,
// and line charts of several traits across the response tokens (layer, smoothing, centring, cleaning, velocity).
// An intervention's answers are a prompt set too: its series are what the gate (cap) read, and the tokens where
// the gate fired (the cap bound) and where the answer was steered (capped) are marked.
(function (TI) {
  'use strict';
  TI.views = TI.views || [];
  const state = { set: 0, row: null, layer: null, shade: null, window: 1, centered: true, clean: 'none', velocity: false, hidden: {} };
  let picker = null;  // kept across control changes so the page and filters stay put

  // The series math, pure (the browser test compares it with trait_interp.dynamics).
  TI.dynamics = {
    // Trailing moving average: s[t] = mean(x[max(0, t-w+1) .. t]), like trait_interp.dynamics.smooth.
    smooth(x, window) {
      const w = Math.max(1, Math.floor(window));
      const out = [];
      let sum = 0;
      for (let t = 0; t < x.length; t++) {
        sum += x[t];
        if (t >= w) sum -= x[t - w];
        out.push(sum / Math.min(t + 1, w));
      }
      return out;
    },
    // v[t] = x[t+1] - x[t]; null at the last token.
    velocity(x) {
      return x.map((v, t) => (t + 1 < x.length ? x[t + 1] - v : null));
    },
    // Projection after cleaning (raw minus the mode's massive-dim part) and centring (minus the midpoint).
    values(file, column, series, opts) {
      const raw = file.values[column];
      const massive = opts.clean !== 'none' && file.massive[opts.clean] ? file.massive[opts.clean][column] : null;
      const center = opts.centered && series.midpoint !== null ? series.midpoint : 0;
      return raw.map((v, t) => v - (massive ? massive[t] : 0) - center);
    },
    // What a chart line shows: values, smoothed, then (optionally) their velocity.
    display(file, column, series, opts) {
      const smoothed = TI.dynamics.smooth(TI.dynamics.values(file, column, series, opts), opts.window);
      return opts.velocity ? TI.dynamics.velocity(smoothed) : smoothed;
    },
  };

  // Traits projected at different layers (layer: best) share no layer to chart them together, so the
  // layer control then also offers OWN: each trait at its own layer (its first projected one).
  const OWN = 'own';

  function columnsAt(data, layer) {
    const columns = data.series.map((s, i) => [i, s]);
    if (layer !== OWN) return columns.filter(([, s]) => s.layer === layer);
    const seen = new Set();
    return columns.filter(([, s]) => !seen.has(s.trait) && seen.add(s.trait));  // series: by trait, then layer
  }

  // The layers holding every trait (in series order), and whether some layer lacks a trait (then OWN is offered).
  function layerSharing(data) {
    const traits = new Set(data.series.map((s) => s.trait));
    const layers = [...new Set(data.series.map((s) => s.layer))];
    const full = layers.filter((layer) => new Set(columnsAt(data, layer).map(([, s]) => s.trait)).size === traits.size);
    return { full, partial: full.length < layers.length };
  }

  function layerOptions(data) {
    const layers = [...new Set(data.series.map((s) => s.layer))].sort((a, b) => a - b);
    if (!layerSharing(data).partial) return layers;
    const own = columnsAt(data, OWN).map(([, s]) => `${s.trait} L${s.layer}`).join(', ');
    return [[OWN, `each trait's own (${own})`]].concat(layers.map((layer) => [layer, layer]));
  }

  function controls(index, data) {
    const atLayer = columnsAt(data, state.layer);
    const anyMidpoint = data.series.some((s) => s.midpoint !== null);
    const modes = [['none', 'none']].concat(data.cleaning.available.map((m) => [m, m === 'top_k' ? "each layer's top-k dims" : 'recommended dims']));
    const windowBox = TI.el('input', { type: 'number', min: 1, max: 50, value: state.window, class: 'window', 'aria-label': 'smoothing window' });
    windowBox.addEventListener('change', () => { state.window = Math.max(1, Number(windowBox.value) || 1); drawDetail(); });
    const traitBoxes = atLayer.map(([i, s]) => TI.checkbox(s.trait, !state.hidden[s.trait], (on) => {
      state.hidden[s.trait] = !on; drawDetail();
    }, { 'data-trait': s.trait }));
    return TI.el('div', { class: 'controls' },
      TI.select('prompt set', index.sets.map((s, i) => [i, setLabel(s)]), state.set, (v) => {
        state.set = Number(v); state.row = null; picker = null; TI.show('dynamics');
      }, { class: 'set' }),
      TI.select('layer', layerOptions(data), state.layer, (v) => { state.layer = v === OWN ? OWN : Number(v); TI.show('dynamics'); },
        { class: 'layer' }),
      TI.select('shade tokens by', atLayer.map(([, s]) => s.trait), state.shade, (v) => { state.shade = v; drawDetail(); }, { class: 'shade' }),
      TI.el('label', { class: 'control' }, TI.el('span', {}, 'smoothing window'), windowBox),
      TI.checkbox('centered (minus train midpoint)', state.centered && anyMidpoint, (on) => { state.centered = on; drawDetail(); },
        { class: 'centered', disabled: !anyMidpoint }),
      TI.select('massive-dim cleaning', modes, state.clean, (v) => { state.clean = v; drawDetail(); }, { class: 'clean', disabled: modes.length === 1 }),
      TI.checkbox('velocity', state.velocity, (on) => { state.velocity = on; drawDetail(); }, { class: 'velocity' }),
      TI.el('div', { class: 'trait-boxes' }, TI.el('span', {}, 'traits in the chart: '), traitBoxes));
  }

  function setLabel(s) {
    const what = s.intervention ? `${s.model} + ${s.intervention} (${s.kind})` : s.model;
    return `${what} / ${s.prompt_set} (${s.n_prompts})`;
  }

  // The gate's threshold (a cap's low and high) as chart lines, in the displayed units.
  function thresholdLines(series, opts) {
    if (opts.velocity) return [];
    const center = opts.centered && series.midpoint !== null ? series.midpoint : 0;
    const lines = [];
    if (series.threshold !== undefined && series.threshold !== null) lines.push({ y: series.threshold - center, label: `gate threshold (${series.when})`, cls: 'threshold gate' });
    if (series.low !== undefined && series.low !== null) lines.push({ y: series.low - center, label: 'cap low', cls: 'threshold cap' });
    if (series.high !== undefined && series.high !== null) lines.push({ y: series.high - center, label: 'cap high', cls: 'threshold cap' });
    return lines;
  }

  // What happened in the prompt and the unsteered answer beside the intervened one.
  function interventionBlock(data, prompt, file, column) {
    const info = data.intervention, series = data.series[column], read = file.prompt[column];
    const gate = info.gate;
    const rule = gate ? `gate: ${gate.trait} at layer ${gate.layer}, ${gate.mode} mode, ${gate.when} ${TI.fmt(gate.threshold, 3)} (${gate.threshold_from})`
      : `cap at layer ${series.layer}: [${TI.fmt(series.low, 3)}, ${TI.fmt(series.high, 3)}]`;
    const where = read.fired.length ? `${series.read === 'gate' ? 'fired' : 'bound'} at prompt token(s) ${read.fired.map((t) => `${t} (${JSON.stringify(file.prompt_tokens[t])})`).join(', ')}`
      : `${series.read === 'gate' ? 'did not fire' : 'did not bind'} in the prompt`;
    const responseSteered = (file.steered[column] || []).filter((x) => x === 1).length;
    const c = prompt.compare || {};
    const scores = (pair) => (pair ? `${TI.fmt(pair[0], 1)} → ${TI.fmt(pair[1], 1)}` : '–');
    return TI.el('div', { class: 'block intervention-info', dataset: { fired: read.fired.length ? 'yes' : 'no' } },
      TI.el('h3', {}, `Intervention ${info.name} (${info.kind})`),
      TI.el('p', { class: 'note' }, `${rule}; ${where}; ${read.steered} of ${read.tokens} prompt and ${responseSteered} of ${file.tokens.length} response tokens ${series.read === 'gate' ? 'steered' : 'capped'}`
        + (c.gate_score !== null && c.gate_score !== undefined ? `; gate score ${TI.fmt(c.gate_score, 3)}` : '')),
      TI.el('p', { class: 'note' }, `trait ${scores(c.trait)}, coherence ${scores(c.coherence)} (unsteered → intervened), KL ${TI.fmt(c.kl, 4)}`),
      c.baseline !== null && c.baseline !== undefined ? TI.el('div', {}, TI.el('h3', {}, 'Unsteered answer'), TI.el('div', { class: 'full-text baseline-text' }, c.baseline)) : null);
  }

  let current = null;  // {main, index, data, detail}

  async function drawDetail() {
    if (!current || state.row === null) return;
    const { data, detail } = current;
    const prompt = data.prompts[state.row];
    const file = await TI.load(prompt.file);
    if (current.data !== data || data.prompts[state.row] !== prompt) return;  // the user moved on meanwhile
    const opts = { window: state.window, centered: state.centered, clean: state.clean, velocity: state.velocity };
    const atLayer = columnsAt(data, state.layer);
    const shaded = atLayer.find(([, s]) => s.trait === state.shade) || atLayer[0];
    const shadeValues = shaded ? TI.dynamics.smooth(TI.dynamics.values(file, shaded[0], shaded[1], opts), opts.window) : [];
    const maxAbs = Math.max(1e-9, ...shadeValues.map(Math.abs));
    const fired = shaded && file.fired ? file.fired[shaded[0]] : null;  // an intervention's marks, for the shaded read
    const steered = shaded && file.steered ? file.steered[shaded[0]] : null;
    const tokens = TI.el('div', { class: 'tokens', dataset: { count: file.tokens.length } }, file.tokens.map((text, t) => {
      const marks = (fired && fired[t] === 1 ? ' · fired' : '') + (steered && steered[t] === 1 ? ' · steered' : '');
      const span = TI.el('span', { class: 'tok' + (fired && fired[t] === 1 ? ' fired' : '') + (steered && steered[t] === 1 ? ' steered' : ''),
        title: `token ${t}: ${shaded ? TI.fmt(shadeValues[t], 3) : ''}${marks}` }, text);
      if (shaded) span.style.backgroundColor = TI.diverging(shadeValues[t], maxAbs);
      return span;
    }));
    const fields = Object.entries(prompt.fields).filter(([, v]) => v !== null).map(([k, v]) => TI.el('span', { class: 'chip' }, `${k}: ${v}`));
    const chart = TI.el('div', { class: 'charts' });
    const visible = atLayer.filter(([, s]) => !state.hidden[s.trait]);
    const traits = [...new Set(data.series.map((s) => s.trait))];
    const firedDots = file.fired ? visible.map(([i, s]) => ({
      name: `${s.trait} L${s.layer}: ${s.read === 'gate' ? 'gate fired' : 'cap bound'}`, color: '#b3261e', markers: true, line: false,
      points: TI.dynamics.display(file, i, s, opts).map((y, t) => [t, file.fired[i][t] === 1 ? y : null]),
    })).filter((d) => d.points.some((p) => p[1] !== null)) : [];
    TI.lineChart(chart, {
      title: `${opts.velocity ? 'Velocity' : 'Projection'} ` + (state.layer === OWN ? 'with each trait at its own layer' : `at layer ${state.layer}`)
        + (opts.centered ? ', centered' : '')
        + (opts.clean !== 'none' ? `, cleaned (${opts.clean})` : '') + (opts.window > 1 ? `, window ${opts.window}` : ''),
      xLabel: 'response token', yLabel: opts.velocity ? 'Δ projection per token' : 'projection (h·v/‖v‖)', integerX: true,
      width: Math.min(1200, Math.max(760, 16 * file.tokens.length)), height: 320, legend: true,
      series: visible.map(([i, s]) => ({
        name: state.layer === OWN ? `${s.trait} (L${s.layer})` : s.trait,
        color: TI.palette[traits.indexOf(s.trait) % TI.palette.length],  // one colour per trait, any layer
        points: TI.dynamics.display(file, i, s, opts).map((y, t) => [t, y]),
      })).concat(firedDots),
      hlines: [{ y: 0, label: opts.centered && !opts.velocity ? 'train midpoint' : '', cls: 'zero' }]
        .concat(visible.flatMap(([, s]) => thresholdLines(s, opts))),
    });
    const scale = shaded ? TI.el('p', { class: 'note scale' }, 'Shading: ', shaded[1].trait, ' ',
      TI.el('span', { class: 'swatch neg' }), ` −${TI.fmt(maxAbs, 2)}  `, TI.el('span', { class: 'swatch zero' }), ' 0  ',
      TI.el('span', { class: 'swatch pos' }), ` +${TI.fmt(maxAbs, 2)}` + (opts.centered ? ' (relative to the train midpoint)' : '')) : null;
    TI.fill(detail, 
      TI.el('h2', {}, `Prompt #${prompt.id}`, ' ', ...fields),
      prompt.system_prompt ? TI.el('div', { class: 'block' }, TI.el('h3', {}, 'System prompt'), TI.el('div', { class: 'full-text' }, prompt.system_prompt)) : null,
      TI.el('div', { class: 'block' }, TI.el('h3', {}, 'Prompt'), TI.el('div', { class: 'full-text prompt-text' }, prompt.prompt)),
      TI.el('div', { class: 'block' }, TI.el('h3', {}, `Response (${file.tokens.length} tokens)`),
        file.tokens.length ? tokens : TI.el('p', { class: 'note' }, '(empty response)'), scale,
        fired ? TI.el('p', { class: 'note legend-marks' }, TI.el('span', { class: 'tok fired' }, 'fired'), ' the gate fired (the cap bound) at this token; ',
          TI.el('span', { class: 'tok steered' }, 'steered'), ' steered (capped) here; the last token was never read') : null),
      data.intervention && shaded ? interventionBlock(data, prompt, file, shaded[0]) : null,
      TI.el('div', { class: 'block' }, TI.el('h3', {}, 'Traits across the response'), chart));
    detail.dataset.prompt = prompt.id;
    TI.rendered(current.main, 'dynamics');
  }

  async function render(main, index) {
    if (!index.sets.length) {
      TI.fill(main, TI.el('p', { class: 'note' }, 'No prompt set was monitored (prompt_sets in params.yaml).'));
      return;
    }
    const set = index.sets[state.set] || index.sets[0];
    const data = await TI.load(set.key + '/prompts');
    const layers = [...new Set(data.series.map((s) => s.layer))];
    const sharing = layerSharing(data);
    if (state.layer === OWN ? !sharing.partial : !layers.includes(state.layer)) state.layer = sharing.full.length ? sharing.full[0] : OWN;
    const traits = columnsAt(data, state.layer).map(([, s]) => s.trait);
    if (!traits.includes(state.shade)) state.shade = traits[0];
    if (!data.cleaning.available.includes(state.clean)) state.clean = 'none';
    const detail = TI.el('section', { class: 'card detail' }, TI.el('p', { class: 'note' }, 'Pick a prompt above to see its tokens.'));
    const pickerBox = TI.el('section', { class: 'card' }, TI.el('h2', {}, `Prompts: ${set.model}${set.intervention ? ` + ${set.intervention}` : ''} / ${set.prompt_set}`));
    TI.fill(main, controls(index, data), pickerBox, detail);
    current = { main, index, data, detail };
    if (picker && picker.index === data) pickerBox.append(picker.root);
    else picker = new TI.Picker(pickerBox, data, (row) => { state.row = row; drawDetail(); });
    if (state.row !== null) await drawDetail();
    else TI.rendered(main, 'dynamics');
  }

  TI.views.push({ id: 'dynamics', title: 'Trait dynamics', available: (index) => index.sets.length > 0, render });
})(window.TI);
