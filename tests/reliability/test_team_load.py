"""A reduced team-load run (bench/bench_load.py): 8 annotators x 5 clicks on one gunicorn + Redis.

Asserts correctness under concurrency only, never speed: no request fails, and every click's
mask equals the same click computed alone on a fresh backend (before) and on the loaded one
(after). Timing figures come from the full bench, recorded in docs/PERFORMANCE.md.
"""

from __future__ import annotations

from bench.bench_load import LoadConfig, run_load, summary


def test_eight_annotators_get_no_errors_and_the_masks_they_would_get_alone(tmp_path):
    cfg = LoadConfig(
        annotators=8,
        clicks=5,
        tasks_per_annotator=2,
        images=6,
        width=200,
        height=150,
        think_min_s=0.0,
        think_max_s=0.05,
        seed=7,
    )
    report = run_load(cfg, tmp_path, log=lambda message: None)
    assert not report.errors, report.errors
    assert not report.mismatches, report.mismatches
    clicks = report.clicks
    assert len(clicks) == 40 and all(o.rle for o in clicks), [o for o in clicks if not o.rle]
    assert len({o.rle for o in clicks}) > 1  # the team clicked different objects, not one answer for all
    stats = summary(report)
    assert stats["errors"] == 0 and stats["hit_ms"]["n"] + stats["first_click_ms"]["n"] == 40
    # Every task opened queued its image; no image was encoded twice (single flight + cache).
    encodes = report.server_metrics["sam_encoder_seconds_count"]
    assert encodes <= cfg.images
