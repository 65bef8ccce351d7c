"""Test-only scaffolding shared by tests and benches (bench/ imports it from here, never from a conftest).

servers (gunicorn backend, RQ worker), redis_server, fake_ls (images-only and API fakes of LS),
samples (captured LS bodies, their images, the token), images (scene, png), masks (iou,
brush_mask), waiting (wait_for), net (free_port, Tripwire), oracle / official_adapter /
disc_model / oracle_sam2 (the official models as references), server_log, torch_threads.
"""
