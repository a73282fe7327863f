// The page: tabs for the views that have data, routed by the URL hash (#extraction, #steering, ...).
(function (TI) {
  'use strict';
  let index = null;

  function available() {
    return TI.views.filter((v) => v.available(index));
  }

  TI.show = function (id) {
    const views = available();
    const view = views.find((v) => v.id === id) || views[0];
    const main = document.getElementById('view');
    if (!view) {
      TI.fill(main, TI.el('p', { class: 'note' }, 'This dashboard has no data to show.'));
      return;
    }
    if (location.hash.slice(1) !== view.id) history.replaceState(null, '', '#' + view.id);
    for (const tab of document.querySelectorAll('#tabs a')) tab.classList.toggle('active', tab.dataset.view === view.id);
    main.dataset.view = view.id;
    delete main.dataset.rendered;
    view.render(main, index).catch((err) => TI.failure(main, err));
  };

  TI.load('index').then((data) => {
    index = data;
    document.getElementById('experiment').textContent = `· ${data.experiment}`;
    document.title = `trait-interp · ${data.experiment}`;
    document.getElementById('tabs').replaceChildren(...available().map((v) => TI.el('a', { href: '#' + v.id, dataset: { view: v.id } }, v.title)));
    window.addEventListener('hashchange', () => TI.show(location.hash.slice(1)));
    TI.show(location.hash.slice(1));
  }).catch((err) => TI.failure(document.getElementById('view'), err));
})(window.TI);
