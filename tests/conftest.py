"""Shared fixtures: a tiny synthetic VoxCeleb-layout corpus (built once)."""

import os
import sys

import pytest

RECIPE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "VoxCeleb", "SSPS")
sys.path.insert(0, RECIPE)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """6 dev speakers x 2-3 recordings x 2-3 utterances, 3 test speakers."""
    from ssps_ext.mini_corpus import CorpusConfig, build_mini_corpus

    out = str(tmp_path_factory.mktemp("tiny_corpus"))
    cfg = CorpusConfig(
        n_dev_speakers=6, n_test_speakers=3, recordings_per_speaker=(2, 3),
        utterances_per_recording=(2, 3), duration_s=(1.5, 3.0),
        n_noise_per_category=2, n_rir_per_room=1, max_target_trials=40,
    )
    build_mini_corpus(out, seed=0, config=cfg, num_workers=1)
    return out
