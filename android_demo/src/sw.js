// Offline: every file of the app (listed by build.py, with a content hash as the version) is
// cached on install; requests are answered from the cache first, the network second.
const VERSION = '__VERSION__';
const FILES = __FILES__;
const CACHE = `frontalize-${VERSION}`;

self.addEventListener('install', (ev) => {
  ev.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (ev) => {
  ev.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k.startsWith('frontalize-') && k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (ev) => {
  if (ev.request.method !== 'GET') return;
  ev.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const hit = await cache.match(ev.request, { ignoreSearch: true })
      || (ev.request.mode === 'navigate' ? await cache.match('./') : undefined);
    return hit || fetch(ev.request);
  })());
});
