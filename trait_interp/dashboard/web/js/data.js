// Data loading. Every data file is a script `data/<key>.js` that calls TI.receive(key, value):
// a <script> tag loads from http:// and from file:// alike (fetch() is blocked on file://).
window.TI = window.TI || {};
(function (TI) {
  'use strict';
  const cache = new Map();    // key -> value
  const pending = new Map();  // key -> {promise, resolve, reject}

  TI.receive = function (key, value) {
    cache.set(key, value);
    const waiting = pending.get(key);
    if (waiting) {
      pending.delete(key);
      waiting.resolve(value);
    }
  };

  TI.load = function (key) {
    if (cache.has(key)) return Promise.resolve(cache.get(key));
    if (pending.has(key)) return pending.get(key).promise;
    let resolve, reject;
    const promise = new Promise((ok, fail) => { resolve = ok; reject = fail; });
    pending.set(key, { promise, resolve, reject });
    const script = document.createElement('script');
    script.src = 'data/' + key + '.js';
    const fail = (why) => {
      if (!pending.has(key)) return;
      pending.delete(key);
      reject(new Error('data/' + key + '.js: ' + why));
    };
    script.onload = () => { script.remove(); fail('loaded, but it holds another key'); };
    script.onerror = () => { script.remove(); fail('missing; rebuild the dashboard (dvc repro report)'); };
    document.head.appendChild(script);
    return promise;
  };
})(window.TI);
