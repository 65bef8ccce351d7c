"""bench/bench_concepts.py runs end to end: the tiny configurations, both engines, as a user
runs it (its own interpreters, models saved and loaded through `load_concept_engine`), and
every figure it reports is a positive, finite number."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Figures each engine must report (the bench may add more; those must be positive too).
EXPECTED = {
    "sam3": {"load_s", "params_m", "features_s", "find_2_s", "find_10_s", "find_similar_s", "mask_ms_per_instance"},
    "grounding-dino": {"load_s", "params_m", "features_s", "find_2_s", "find_10_s", "sam_encode_s", "box_decode_ms"},
}
COMMON = {"seconds_per_image", "rss_before_load_mib", "rss_after_load_mib", "peak_rss_mib"}


def test_bench_concepts_tiny_run_reports_positive_figures(tmp_path: Path) -> None:
    out = tmp_path / "concepts.json"
    command = [sys.executable, "bench/bench_concepts.py", "--tiny", "--repeats", "1", "--boxes", "3"]
    done = subprocess.run(
        [*command, "--json", str(out), "--keep", str(tmp_path / "models")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["machine"]["size"] == "tiny"
    results = {result["engine"]: result for result in report["results"]}
    assert set(results) == set(EXPECTED)
    for engine, result in results.items():
        figures = result["figures"]
        assert EXPECTED[engine] | COMMON <= set(figures), f"{engine}: {sorted(figures)}"
        for name, value in figures.items():
            assert isinstance(value, float) and math.isfinite(value) and value > 0, f"{engine}.{name} = {value!r}"
        assert figures["peak_rss_mib"] >= figures["rss_after_load_mib"] >= figures["rss_before_load_mib"]
        assert figures["seconds_per_image"] >= figures["features_s"] + figures["find_2_s"]
        assert all(isinstance(count, int) and count >= 0 for count in result["found"].values())
    gdino = results["grounding-dino"]
    assert gdino["found"]["boxes_decoded"] == 3, "threshold 0 finds every query's box; --boxes caps them"
    assert gdino["figures"]["sam_params_m"] > 30, "the SAM part is the real SAM 2.1 tiny"
    assert "| Grounding DINO tiny + SAM 2.1 tiny |" in done.stdout and "| SAM 3 |" in done.stdout
