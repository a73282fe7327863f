// The prompt picker: text search, one filter per categorical field (note, extra keys, judge labels),
// pages of 50. The list shows one-line previews; the selected prompt is shown in full by the view.
(function (TI) {
  'use strict';
  const PAGE = 50;
  const MISSING = '(missing)';

  // new TI.Picker(parent, setIndex, onSelect(row)) ; setIndex = data of sets/<k>/prompts
  TI.Picker = function (parent, index, onSelect) {
    this.index = index;
    this.onSelect = onSelect;
    this.query = '';
    this.filters = {};  // field name -> chosen value ('' = all)
    this.page = 0;
    this.selected = null;
    this.haystack = index.prompts.map((p) => [p.id, p.prompt, p.response, p.system_prompt || '',
      ...Object.values(p.fields).map((v) => (v === null ? '' : v))].join('\n').toLowerCase());
    this.controls = TI.el('div', { class: 'filters' });
    this.body = TI.el('div', {});
    this.root = TI.el('div', { class: 'picker' }, this.controls, this.body);
    parent.append(this.root);
    this.drawControls();
    this.draw();
  };

  TI.Picker.prototype.matches = function () {
    const words = this.query.toLowerCase().split(/\s+/).filter(Boolean);
    const rows = [];
    this.index.prompts.forEach((p, row) => {
      for (const [name, want] of Object.entries(this.filters)) {
        if (want === '') continue;
        const value = p.fields[name];
        if ((value === null || value === undefined ? MISSING : value) !== want) return;
      }
      if (words.every((w) => this.haystack[row].includes(w))) rows.push(row);
    });
    return rows;
  };

  // The search box and filters: drawn once (and on clear), so typing never loses focus.
  TI.Picker.prototype.drawControls = function () {
    const search = TI.el('input', {
      type: 'search', class: 'search', placeholder: 'Search id, prompt, response, note…', value: this.query,
      'aria-label': 'Search prompts',
    });
    search.addEventListener('input', () => { this.query = search.value; this.page = 0; this.draw(); });
    const filters = this.index.filters.map((f) => {
      const options = [['', `all (${this.index.n_prompts})`]].concat(
        f.values.map(([v, n]) => [v === null ? MISSING : v, `${v === null ? MISSING : v} (${n})`]));
      return TI.select(f.kind === 'label' ? `${f.name} (judge)` : f.name, options, this.filters[f.name] || '', (v) => {
        this.filters[f.name] = v; this.page = 0; this.draw();
      }, { 'data-filter': f.name });
    });
    const clear = TI.el('button', { type: 'button', class: 'link clear', onclick: () => {
      this.query = ''; this.filters = {}; this.page = 0; this.drawControls(); this.draw();
    } }, 'clear');
    TI.fill(this.controls, search, ...filters, clear);
  };

  // The count, the pager and the current page of the list.
  TI.Picker.prototype.draw = function () {
    const rows = this.matches();
    const pages = Math.max(1, Math.ceil(rows.length / PAGE));
    this.page = Math.min(this.page, pages - 1);
    const shown = rows.slice(this.page * PAGE, (this.page + 1) * PAGE);
    const from = rows.length ? this.page * PAGE + 1 : 0, to = this.page * PAGE + shown.length;
    const summary = TI.el('span', {
      class: 'summary', dataset: { filtered: rows.length, page: this.page + 1, pages },
    }, `${from}–${to} of ${rows.length} prompts` + (rows.length < this.index.n_prompts ? ` (filtered from ${this.index.n_prompts})` : ''));
    const pager = TI.el('span', { class: 'pager' },
      TI.el('button', { type: 'button', class: 'prev', disabled: this.page === 0, onclick: () => { this.page -= 1; this.draw(); } }, '‹ prev'),
      TI.el('span', { class: 'page' }, `page ${this.page + 1} of ${pages}`),
      TI.el('button', { type: 'button', class: 'next', disabled: this.page >= pages - 1, onclick: () => { this.page += 1; this.draw(); } }, 'next ›'));
    const list = TI.el('ol', { class: 'prompt-list' }, shown.map((row) => {
      const p = this.index.prompts[row];
      const labels = this.index.filters.filter((f) => (f.kind === 'label' || f.kind === 'intervention') && p.fields[f.name] !== null)
        .map((f) => TI.el('span', { class: 'chip' }, `${f.name}: ${p.fields[f.name]}`));
      return TI.el('li', {}, TI.el('button', {
        type: 'button', class: 'prompt-item' + (row === this.selected ? ' selected' : ''), dataset: { row, id: p.id },
        onclick: () => this.select(row),
      }, TI.el('span', { class: 'pid' }, '#' + p.id), p.fields.note ? TI.el('span', { class: 'note-tag' }, p.fields.note) : null,
      ...labels, TI.el('span', { class: 'preview' }, p.prompt.replace(/\s+/g, ' '))));
    }));
    const empty = rows.length ? null : TI.el('p', { class: 'note' }, 'No prompt matches; clear the search or a filter.');
    TI.fill(this.body, TI.el('div', { class: 'pager-row' }, summary, pager), list, empty);
  };

  TI.Picker.prototype.select = function (row) {
    this.selected = row;
    this.draw();
    this.onSelect(row);
  };
})(window.TI);
