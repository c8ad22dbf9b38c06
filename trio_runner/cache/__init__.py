"""The Actions cache server that ``actions/cache`` talks to (spec: cache-protocol.md).

* :mod:`.server`: run it (:func:`~.server.run_cache_server`, :func:`~.server.serve_cache`),
  per-task credentials (:meth:`~.server.CacheService.job_token`,
  :class:`~.server.RemoteCache`), outbound-IP detection.
* :mod:`.app`: the ASGI app; Quart-Trio for the JSON routes (v1 REST, v2 twirp,
  ``/_internal`` control plane), dispatching data routes to :mod:`.transfer`.
* :mod:`.transfer`: streamed part/blob uploads and downloads as plain ASGI.
* :mod:`.auth`: job-token registry, signing key file, signed URLs.
* :mod:`.store`: SQLite metadata, blob files, matching, upload assembly, eviction.
* :mod:`.settings`, :mod:`.state`, :mod:`.wire`: settings, shared state, request bodies.
* :mod:`.command`: the ``trio-runner cache-server`` sub-command.
"""
