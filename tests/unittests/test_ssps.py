"""The SSPS hook: set-up checks, a full step, checkpoint round trip."""

import pytest
import torch
from speechbrain.utils.checkpoints import Checkpointer

from ssps_ext.ssps import SSPS

N, B, D = 96, 8, 16


def speaker_world(seed=0):
    """12 speakers x 2 recordings x 4 utterances, references near the speaker."""
    g = torch.Generator().manual_seed(seed)
    speakers = torch.arange(N) // 8
    recordings = torch.arange(N) // 4
    centres = torch.nn.functional.normalize(torch.randn(12, D, generator=g), dim=1)
    refs = torch.nn.functional.normalize(centres[speakers] + 0.05 * torch.randn(N, D, generator=g), dim=1)
    return speakers, recordings, refs


def filled_ssps(**kwargs):
    speakers, recordings, refs = speaker_world()
    ssps = SSPS(**{"K": 12, "M": 0, "start_epoch": 2, "pos_queue_size": 48, "seed": 0, **kwargs})
    ssps.setup(N, B, D, D, 1, speakers, recordings)
    order = torch.randperm(N, generator=torch.Generator().manual_seed(1))
    for step in range(N // B):
        idx = order[step * B : (step + 1) * B]
        ssps.update(idx, refs[idx], refs[idx][None] * 2)  # Q' rows = 2 x reference
    return ssps, speakers, recordings, refs


def test_setup_errors_name_the_setting():
    with pytest.raises(ValueError, match="M = 5 neighbouring clusters needs M < K = 5"):
        SSPS(K=5, M=5)
    with pytest.raises(ValueError, match="K = 200 clusters but the training set has only 96"):
        SSPS(K=200).setup(N, B, D, D)
    with pytest.raises(ValueError, match="rec_id"):
        SSPS(K=4, same_recording="exclude", pos_queue_size=16).setup(N, B, D, D)
    # 96 + 5 utterances, global batch 16: Q-hat holds 96 references, K = 100 cannot be clustered
    with pytest.raises(ValueError, match="K = 100 clusters but Q-hat holds 96 references"):
        SSPS(K=100, pos_queue_size=16).setup(N + 5, 16, D, D)
    SSPS(K=96, pos_queue_size=16).setup(N + 5, 16, D, D)
    with pytest.raises(ValueError, match="cluster_prob 'expo'"):
        SSPS(K=4, cluster_prob="expo")
    with pytest.raises(ValueError, match="kmeans_backend 'faiss'"):
        SSPS(K=4, kmeans_backend="faiss")


def test_sizes_rounded_to_global_batch_and_sampling_schedule():
    ssps = SSPS(K=20, M=1, start_epoch=5, pos_queue_size=20)
    ssps.setup(N + 5, B, D, D, n_views=2)
    assert ssps.ref_queue.size == N and ssps.pos_queue.size == 16
    assert ssps.pos_queue.embeddings.shape == (2, 16, D)
    assert not ssps.writes(3) and ssps.writes(4) and not ssps.samples(4) and ssps.samples(5)


def test_same_cluster_step_finds_same_speaker_other_utterances():
    ssps, speakers, recordings, refs = filled_ssps()
    stats = ssps.cluster(epoch=2)
    assert stats["ssps_kmeans_nmi_speaker"] > 0.9
    anchors = torch.arange(0, N, 3)
    slots, step = ssps.sample(anchors)
    got = slots >= 0
    partners = ssps.pos_queue.indices[slots[got]]
    assert got.float().mean() == step["ssps_coverage"] > 0.5
    assert (ssps.assignments[partners] == ssps.assignments[anchors[got]]).all()  # M = 0: own cluster
    same_speaker = (speakers[partners] == speakers[anchors[got]]).float().mean()
    assert step["ssps_speaker_acc"] == pytest.approx(float(same_speaker)) and same_speaker > 0.7
    slots, got = torch.cat([slots, torch.tensor([-1])]), torch.cat([got, torch.tensor([False])])  # + a fallback row
    z = (1e3 * torch.randn(len(slots), D, generator=torch.Generator().manual_seed(0))).requires_grad_()
    out = ssps.substitute(z, slots)
    assert torch.equal(out[got], ssps.pos_queue.embeddings[0][slots[got]])
    assert torch.equal(out[~got], z[~got].detach())
    out.sum().backward()
    assert z.grad[got].abs().sum() == 0 and z.grad[~got].abs().sum() > 0  # replaced rows carry no gradient


def test_neighbour_cluster_is_never_the_anchor_cluster():
    ssps, *_ = filled_ssps(M=1)
    ssps.cluster(epoch=2)
    anchors = torch.arange(N)
    slots, _ = ssps.sample(anchors)
    partners = ssps.pos_queue.indices[slots[slots >= 0]]
    assert (ssps.assignments[partners] != ssps.assignments[anchors[slots >= 0]]).all()


def test_centroid_sampling_substitutes_the_chosen_centroid():
    ssps, *_ = filled_ssps(M=1, sampling="kmeans-centroid")
    ssps.cluster(epoch=2)
    anchors = torch.arange(0, N, 5)
    chosen, step = ssps.sample(anchors)
    assert step["ssps_coverage"] == 1.0
    assert torch.equal(chosen, ssps.nearby[ssps.assignments[anchors], 0])  # M = 1: the nearest other cluster
    assert (chosen != ssps.assignments[anchors]).all()
    out = ssps.substitute(torch.zeros(len(anchors), D), chosen)
    assert torch.equal(out, ssps.centroids[chosen])


def test_exclude_same_recording():
    ssps, _, recordings, _ = filled_ssps(same_recording="exclude")
    ssps.cluster(epoch=2)
    anchors = torch.arange(N)
    slots, stats = ssps.sample(anchors)
    partners = ssps.pos_queue.indices[slots[slots >= 0]]
    assert (recordings[partners] != recordings[anchors[slots >= 0]]).all()
    assert stats["ssps_recording_acc"] == 0


def test_same_recording_exclude_and_prefer_other():
    """Supervised positives with Q' holding only recording 10 of speaker 5:
    its anchors from recording 11 get recording 10 either way; anchors from
    recording 10 keep their own positive with "exclude" and get a slot of
    recording 10 with "prefer_other"; speaker 7 (both recordings in Q') always
    gets the other recording."""
    speakers, recordings, refs = speaker_world()
    order = torch.cat([torch.arange(40), torch.arange(44, 96), torch.arange(40, 44)])  # Q' = the last 48 written
    anchors = torch.tensor([44, 45, 40, 41, 60, 56])
    got = {}
    for mode in ("exclude", "prefer_other"):
        ssps = SSPS(K=1, M=0, start_epoch=2, pos_queue_size=48, sampling="supervised", same_recording=mode, seed=0)
        ssps.setup(N, B, D, D, 1, speakers, recordings)
        for step in range(N // B):
            idx = order[step * B : (step + 1) * B]
            ssps.update(idx, refs[idx], refs[idx][None])
        ssps.cluster(epoch=2)
        slots, _ = ssps.sample(anchors)
        got[mode] = torch.where(slots >= 0, ssps.pos_queue.indices[slots.clamp(min=0)], -1)
    for mode, partner in got.items():
        assert bool(((partner[:2] >= 40) & (partner[:2] < 44)).all()), mode  # recording 10
        assert bool(((partner[4] >= 56) & (partner[4] < 60))) and bool(partner[5] >= 60) and bool(partner[5] < 64), mode
    assert got["exclude"][2:4].tolist() == [-1, -1]
    assert bool(((got["prefer_other"][2:4] >= 40) & (got["prefer_other"][2:4] < 44)).all())
    with pytest.raises(ValueError, match="same_recording 'never'"):
        SSPS(same_recording="never")


def test_supervised_sampling_draws_the_true_speaker_from_another_recording():
    """Labels instead of k-means: references are random (k-means would not
    find the speakers), yet every partner is the anchor's speaker."""
    speakers, recordings, _ = speaker_world()
    ssps = SSPS(K=1, M=0, start_epoch=2, pos_queue_size=48, sampling="supervised", same_recording="exclude")
    ssps.setup(N, B, D, D, 1, speakers, recordings)
    assert ssps.K == 12
    noise = torch.nn.functional.normalize(torch.randn(N, D, generator=torch.Generator().manual_seed(3)), dim=1)
    for step in range(N // B):
        idx = torch.arange(step * B, (step + 1) * B)
        ssps.update(idx, noise[idx], noise[idx][None])
    ssps.cluster(epoch=2)
    anchors = torch.arange(48, N)  # their speakers' other recordings are in Q' (utterances 48..95)
    slots, stats = ssps.sample(anchors)
    assert (slots >= 0).all()
    partners = ssps.pos_queue.indices[slots]
    assert torch.equal(speakers[partners], speakers[anchors])
    assert (recordings[partners] != recordings[anchors]).all()
    assert stats["ssps_speaker_acc"] == 1.0
    with pytest.raises(ValueError, match="M must be 0"):
        SSPS(K=4, M=1, sampling="supervised")
    with pytest.raises(ValueError, match="spk_id"):
        SSPS(K=4, M=0, sampling="supervised").setup(N, B, D, D)


def test_no_clusters_yet_means_fallback():
    ssps, *_ = filled_ssps()
    slots, stats = ssps.sample(torch.arange(B))
    assert (slots == -1).all() and stats["ssps_coverage"] == 0


def test_checkpoint_round_trip_gives_identical_next_step(tmp_path):
    ssps, *_ = filled_ssps(M=1)
    ssps.cluster(epoch=2)
    ssps.sample(torch.arange(B))  # advance the generator
    Checkpointer(str(tmp_path), {"ssps": ssps}).save_checkpoint()
    expected = ssps.sample(torch.arange(16))[0]
    speakers, recordings, _ = speaker_world()
    fresh = SSPS(K=12, M=1, start_epoch=2, pos_queue_size=48, seed=123)
    fresh.setup(N, B, D, D, 1, speakers, recordings)
    Checkpointer(str(tmp_path), {"ssps": fresh}).recover_if_possible()
    assert torch.equal(fresh.assignments, ssps.assignments)
    assert torch.equal(fresh.pos_queue.embeddings, ssps.pos_queue.embeddings)
    assert int(fresh.clustered_epoch) == 2 and fresh.cluster(epoch=2) == {}  # no re-clustering mid-epoch
    assert torch.equal(fresh.sample(torch.arange(16))[0], expected)


def test_checkpoint_with_other_queue_sizes_is_a_clear_error(tmp_path):
    ssps, *_ = filled_ssps()
    Checkpointer(str(tmp_path), {"ssps": ssps}).save_checkpoint()
    other = SSPS(K=12, M=0, start_epoch=2, pos_queue_size=48)
    other.setup(N + B, B, D, D)
    with pytest.raises(ValueError, match=r"ref_queue.indices \(96,\) vs \(104,\)"):
        Checkpointer(str(tmp_path), {"ssps": other}).recover_if_possible()


def test_brain_settings_checked_before_training():
    """ssps_start_epoch after the last epoch, or an unavailable k-means
    backend, stop ``prepare_training`` (before any queue fill or step)."""
    from types import SimpleNamespace

    from ssps_ext.brains.ssps_hooks import SSPSHooks

    def brain(ssps, epochs):
        return SimpleNamespace(hparams=SimpleNamespace(ssps=ssps, number_of_epochs=epochs), ssps=ssps, device="cpu",
                               check_crops=lambda: None, check_reference=lambda: None)  # tested elsewhere

    with pytest.raises(ValueError, match="ssps_start_epoch = 11 is after the last epoch"):
        SSPSHooks.prepare_training(brain(SSPS(K=4, start_epoch=11), 10), train_set=None)
    from ssps_ext.ssps.kmeans import available_backends

    if "faiss-gpu" in available_backends():
        pytest.skip("faiss-gpu is available here: no unavailable backend to request")
    with pytest.raises(RuntimeError, match="'faiss-gpu' is not available"):
        SSPSHooks.prepare_training(brain(SSPS(K=4, start_epoch=3, kmeans_backend="faiss-gpu"), 10), train_set=None)


def test_each_rank_restores_its_own_generator(tmp_path, monkeypatch):
    """Rank 0 writes every rank's generator state; rank 1 continues its own
    draws after a resume (not rank 0's, not a reseed). Ranks are simulated:
    the gather returns the two ranks' states as a real all_gather would."""
    from ssps_ext import distributed

    ranks = [filled_ssps()[0] for _ in range(2)]
    fresh = filled_ssps()[0]  # the resumed rank 1
    ranks[1].generator.manual_seed(123)
    for r in ranks:
        torch.rand(5, generator=r.generator)
    states = torch.stack([r.generator.get_state() for r in ranks])
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "gather_objects", lambda x: list(states))
    ranks[0].gather_generator_states()
    Checkpointer(str(tmp_path), {"ssps": ranks[0]}).save_checkpoint()
    expected = torch.rand(3, generator=ranks[1].generator)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    Checkpointer(str(tmp_path), {"ssps": fresh}).recover_if_possible()
    assert torch.equal(torch.rand(3, generator=fresh.generator), expected)
