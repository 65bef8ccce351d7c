"""Test-only scaffolding shared by tests and benches (bench/ imports it from here, never from a conftest).

- Servers and processes: servers (gunicorn backend, RQ worker), backend_fixtures (module-scoped
  redis_server, start_backend), redis_server, worker_pool (Workers), fake_ls (images-only and
  API fakes of LS), fake_http (FakeServer, requires_token), raw_http (CaptureServer,
  TrickleServer), ls_tokens (jwt, make_pat), server_log, net (free_port, Tripwire).
- LS data: samples (captured LS bodies, their images, the token, request builders),
  label_configs, json_paths (leaf_paths, replaced).
- Checking results: images (scene, png), masks (iou, brush_mask), amg_records (AMG record
  matching), cached (read an embedding cache without computing), waiting (wait_for),
  timing (timed, ANSWER_WITHIN_S), torch_threads.
- Models: oracle / official_adapter / disc_model / oracle_sam2 / oracle_sam_hq /
  oracle_mobile_sam (the official models as references), family_checkpoints (a random
  official-layout file per family).
"""
