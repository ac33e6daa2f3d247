"""The GAIS heads: the fast pooling equals the naive one, and each switch does what it says."""

import itertools

import numpy as np
import pytest
import torch

from gais_pipe.retrieval.augment import same_sound
from gais_pipe.retrieval.heads import GAISHead, VideoBatch
from gais_pipe.retrieval.losses import adaptive_margin, gate_match_loss, symmetric_info_nce

D, DA, T = 16, 8, 5


def videos(m: int = 7, seed: int = 0) -> VideoBatch:
    g = torch.Generator().manual_seed(seed)
    return VideoBatch(
        torch.randn(m, T, D, generator=g),
        torch.randn(m, T, DA, generator=g),
        torch.rand(m, T, generator=g) > 0.3,
    )


def head(**cfg) -> GAISHead:
    torch.manual_seed(1)
    model = GAISHead(D, DA, T, {"dropout": 0.0, **cfg})
    with torch.no_grad():  # move away from the identity / zero initialisation so nothing hides
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model.eval()


@pytest.mark.parametrize(
    "gate,pooling", list(itertools.product(["text", "text-free", "fixed", "match"], ["xpool", "mean"]))
)
def test_fast_pooling_equals_the_naive_form(gate, pooling):
    model, batch, text = head(gate=gate, pooling=pooling), videos(), torch.randn(3, D)
    fast = model.pool(text, batch).video
    naive = model.reference_pool(text, batch)
    torch.testing.assert_close(fast, naive, atol=1e-4, rtol=1e-4)


def test_gates_are_zero_without_sound_and_follow_the_switches():
    batch, text = videos(), torch.randn(3, D)
    gates = head(gate="text").pool(text, batch).gates
    assert gates.shape == (3, 7, T)
    assert torch.all(gates[:, ~batch.mask] == 0) and torch.all(gates[:, batch.mask] > 0)
    assert not torch.allclose(gates[0], gates[1])  # text-guided: another text, other gates
    free = head(gate="text-free").pool(text, batch).gates
    torch.testing.assert_close(free[0], free[1])
    fixed = head(gate="fixed").pool(text, batch).gates
    assert torch.all(fixed[:, batch.mask] == 0.5)
    silent = head(audio=False).pool(text, batch)
    assert torch.all(silent.gates == 0)
    changed = VideoBatch(batch.frames, torch.randn_like(batch.audio), batch.mask)
    torch.testing.assert_close(head(audio=False).pool(text, changed).video, silent.video)  # audio ignored


def test_attention_is_a_distribution_over_frames():
    pooled = head().pool(torch.randn(2, D), videos())
    torch.testing.assert_close(pooled.attention.sum(-1), torch.ones(2, 7))


def test_perturbation_only_in_training_and_shaped_by_the_semantic_variance():
    model = head(perturbation="svsp")
    batch, text = videos(), torch.randn(4, D)
    model.eval()
    torch.testing.assert_close(model(text, batch).full, model(text, batch).full)  # deterministic at inference
    model.train()
    groups = torch.tensor([0, 0, 1, 1])
    captions = torch.randn(4, D)
    captions[:, :4] *= 10  # paraphrases of one video vary most in the first 4 dimensions
    before = model.text_variance.clone()
    for _ in range(50):
        model.update_text_variance(captions, groups)
    assert model.text_variance[:4].mean() > 5 * model.text_variance[4:].mean()
    assert not torch.equal(before, model.text_variance)
    noise = model.perturb(text, torch.zeros(4, 7, T)) - torch.nn.functional.normalize(text, dim=-1).unsqueeze(1)
    assert noise[..., :4].std() > 2 * noise[..., 4:].std()  # the ellipsoid is stretched where paraphrases vary
    iso = head(perturbation="isotropic").train()
    spread = (
        iso.perturb(text, torch.zeros(4, 7, T)) - torch.nn.functional.normalize(text, dim=-1).unsqueeze(1)
    ).detach()
    assert float(spread[..., :4].std() / spread[..., 4:].std()) == pytest.approx(1.0, abs=0.35)


def test_stage1_embedding_is_query_independent_and_unit_length():
    model, batch = head(), videos()
    embedding = model.stage1(batch)
    assert embedding.shape == (7, D)
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(7))
    scores = model(torch.randn(3, D), batch)
    assert scores.full.shape == scores.stage1.shape == (3, 7)


def test_losses():
    logits = torch.eye(4) * 10
    assert symmetric_info_nce(logits) < 0.01
    assert symmetric_info_nce(torch.zeros(4, 4)) == pytest.approx(torch.log(torch.tensor(4.0)).item())
    text = torch.randn(4, D)
    margin = adaptive_margin(text, text.clone(), beta=0.2, delta=0.1)
    assert torch.all(margin.diagonal() == 0) and torch.all(margin <= 0.1 + 1e-6) and torch.all(margin >= 0)
    same = adaptive_margin(text[[0, 0]], text[[0, 0]], 0.2, 0.1)
    assert same[0, 1].abs() < 1e-6  # a duplicate of the positive gets no margin


def test_noise_norm_is_the_radius_whatever_the_dimension_and_shape():
    """||noise|| ~ r: on unit text, a radius of 0.1 is a tenth of the vector (not 0.1 * ||s|| * sqrt(D))."""
    torch.manual_seed(0)
    for dim in (16, 512):
        model = GAISHead(dim, DA, T, {"perturbation": "svsp", "radius_init": 0.1}).train()
        variance = torch.rand(dim) ** 4  # a very uneven shape
        model.text_variance.copy_(variance)
        noise = model.noise(torch.full((64, 32, 1), 0.1), 64, 32)
        norms = noise.norm(dim=-1)
        assert float(norms.pow(2).mean().sqrt()) == pytest.approx(0.1, rel=0.05)
        assert float(norms.max()) < 0.1 * 4  # bounded: no dimension blows the norm up
        text = torch.randn(5, dim)
        moved = model.perturb(text, torch.zeros(5, 3, T)) - torch.nn.functional.normalize(text, dim=-1).unsqueeze(1)
        assert float(moved.detach().norm(dim=-1).mean()) < 0.2


def test_svsp_and_isotropic_inject_the_same_energy_in_different_shapes():
    torch.manual_seed(0)
    svsp, iso = (GAISHead(D, DA, T, {"perturbation": p}).train() for p in ("svsp", "isotropic"))
    variance = torch.ones(D)
    variance[:4] = 25.0
    svsp.text_variance.copy_(variance)
    radius = torch.full((200, 50, 1), 0.3)
    a, b = svsp.noise(radius, 200, 50), iso.noise(radius, 200, 50)
    assert float(a.pow(2).sum(-1).mean()) == pytest.approx(float(b.pow(2).sum(-1).mean()), rel=0.03)
    assert float(a[..., :4].std() / a[..., 4:].std()) == pytest.approx(5.0, rel=0.1)  # the shape differs
    torch.testing.assert_close(svsp.noise_shape().pow(2).mean(), torch.tensor(1.0))


def test_the_radius_is_one_per_pair_and_the_prior_gives_it_a_gradient_both_ways():
    from gais_pipe.retrieval.losses import radius_prior

    model = head(perturbation="svsp").train()
    out = model(torch.randn(3, D), videos())
    assert out.radius.shape == (3, 7)
    for start, direction in ((0.01, -1), (1.0, 1)):  # below r0 the prior pushes up, above it down
        radius = torch.tensor([start], requires_grad=True)
        radius_prior(radius, 0.1).backward()
        assert float(radius.grad) * direction > 0
    assert float(radius_prior(torch.tensor([0.1]), 0.1)) == pytest.approx(0.0)


def test_weight_decay_spares_scale_biases_norms_gates_radius_and_identity_maps():
    from gais_pipe.retrieval.schedule import optimizer_for

    model = GAISHead(D, DA, T, {"gate_bilinear": "lowrank"})
    decayed, spared = optimizer_for(model, 1e-3, 0.1).param_groups
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decayed["params"]}
    assert decayed == {"text_adapter.0.weight", "text_adapter.2.weight", "audio_proj.weight"}
    spared = {names[id(p)] for p in spared["params"]}
    for name in ("logit_scale", "gate.weight", "gate0.weight", "radius.weight", "query.weight", "residual.weight"):
        assert name in spared
    assert "norm_final.weight" in spared and "gate_audio_factor.weight" in spared and "audio_proj.bias" in spared


@pytest.mark.parametrize("bilinear", ["diagonal", "lowrank"])
def test_the_bilinear_gate_term_starts_at_zero_and_is_text_times_audio(bilinear):
    batch, text = videos(), torch.randn(3, D)
    fresh = GAISHead(D, DA, T, {"gate_bilinear": bilinear})
    plain = GAISHead(D, DA, T, {"gate_bilinear": "none"})
    plain.load_state_dict(fresh.state_dict(), strict=False)
    torch.testing.assert_close(fresh.pool(text, batch).gates, plain.pool(text, batch).gates)
    model = head(gate_bilinear=bilinear)  # perturbed: B != 0
    gates = model.pool(text, batch).gates
    audio, _ = model._audio(batch)
    if bilinear == "lowrank":
        b = model.gate_text_factor.weight.T @ model.gate_audio_factor.weight  # [D, D]
    else:
        b = torch.diag(model.gate_diagonal)
    w = model.gate.weight[0]
    frames = model.frame_stats(batch.frames)
    logits = (frames @ w[:D] + audio @ w[D : 2 * D]).unsqueeze(0) + (text @ w[2 * D :] + model.gate.bias)[:, None, None]
    logits = logits + torch.einsum("nd,de,mte->nmt", text, b, audio)
    torch.testing.assert_close(gates, torch.sigmoid(logits) * batch.mask.float(), atol=1e-5, rtol=1e-5)


def test_the_relevance_gate_is_the_stage1_gate_opened_further_by_the_texts_cosine_with_the_audio():
    """gate = "relevance": logit = (text-free stage-1 logit: w0_v v + w0_a a' + b0) + alpha cos(t, a'), alpha =
    exp(.) >= 0: no linear text term, so a caption cannot open the gate on audio unlike what it says (the mismatch
    route of the linear text gate), and the part that tells sound from noise is the one stage 1 trains."""
    batch, text = videos(), torch.randn(3, D)
    model = head(gate="relevance")
    audio, _ = model._audio(batch)
    w = model.gate0.weight[0]
    base = (model.frame_stats(batch.frames) @ w[:D] + audio @ w[D:] + model.gate0.bias).unsqueeze(0)
    cos = torch.nn.functional.cosine_similarity(text[:, None, None, :], audio[None], dim=-1)
    expected = torch.sigmoid(base + model.gate_cosine.exp() * cos) * batch.mask.float()
    torch.testing.assert_close(model.pool(text, batch).gates, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        model.gate.weight += 5.0  # the linear text gate's weights are not used
        model.gate.bias += 5.0
    torch.testing.assert_close(model.pool(text, batch).gates, expected, atol=1e-5, rtol=1e-5)


def test_ties_stay_pessimistic_when_the_heads_cannot_tell_videos_apart():
    from gais_pipe.retrieval.metrics import text_to_video
    from gais_pipe.retrieval.scoring import full_scores

    model = head()
    with torch.no_grad():  # every video pools to the same vector: every score ties
        model.norm_final.weight.zero_()
        model.norm_final.bias.fill_(1.0)
    scores = full_scores(model, torch.randn(7, D), videos())
    result = text_to_video(scores, torch.arange(7).numpy())
    assert result["R@1"] == 0.0 and result["MdR"] == 7


def test_two_stage_scores_in_groups_equal_one_text_at_a_time():
    """Grouping texts against the union of their candidates must not change a single re-ranked score."""
    from gais_pipe.retrieval.scoring import stage1_scores, two_stage_scores

    model, batch, texts = head(), videos(m=23, seed=3), torch.randn(11, D)
    first = stage1_scores(model, texts, batch)
    k = 5
    grouped = two_stage_scores(model, texts, batch, first, k, max_pairs=60)  # groups of 3 texts
    expected = first - 10.0
    state = model.prepare(batch)
    for j, candidates in enumerate(np.argsort(-first, axis=1, kind="stable")[:, :k]):
        with torch.no_grad():
            one = model(texts[j : j + 1], state.select(torch.from_numpy(candidates)), with_stage1=False).full[0]
        expected[j, candidates] = one.numpy()
    np.testing.assert_allclose(grouped, expected, rtol=1e-5, atol=1e-5)
    assert (np.argsort(-grouped, axis=1)[:, :k] == np.argsort(-expected, axis=1)[:, :k]).all()


def test_motion_term_tells_a_still_video_from_a_moving_one_with_the_same_mean_frame():
    """Pooling is a weighted mean of frames: without the motion term, a still shot and a shot whose frames
    swing around the same mean pool alike (mean pooling shows it exactly); with it, they do not."""
    torch.manual_seed(0)
    signs = torch.tensor([(-1.0) ** f for f in range(T)])
    swing = torch.randn(1, 1, D) * (signs - signs.mean()).view(1, T, 1)  # frames that average to zero
    centre = torch.randn(1, 1, D)
    frames = torch.cat([centre.expand(1, T, D), centre + swing])  # same mean frame, one still, one moving
    batch = VideoBatch(frames, torch.zeros(2, T, DA), torch.zeros(2, T, dtype=torch.bool))
    text = torch.randn(3, D)
    kept = head(pooling="mean", motion="none").pool(text, batch).video
    moved = head(pooling="mean", motion="absdiff").pool(text, batch).video
    torch.testing.assert_close(kept[:, 0], kept[:, 1])
    assert (moved[:, 0] - moved[:, 1]).norm(dim=-1).min() > 0.1
    for pooling in ("xpool", "mean"):  # the fast pooling and the naive form agree with the motion term on
        model = head(pooling=pooling, motion="absdiff")
        torch.testing.assert_close(model.pool(text, batch).video, model.reference_pool(text, batch))


@pytest.mark.parametrize("gate", ["relevance", "text-free", "text"])
def test_gates_that_read_sound_only_ignore_the_frames(gate):
    batch, text = videos(), torch.randn(3, D)
    other = VideoBatch(batch.frames + 3 * torch.randn_like(batch.frames), batch.audio, batch.mask)
    sound_only = head(gate=gate, gate_frames=False)
    torch.testing.assert_close(sound_only.pool(text, batch).gates, sound_only.pool(text, other).gates)
    both = head(gate=gate)
    assert not torch.allclose(both.pool(text, batch).gates, both.pool(text, other).gates)


def test_the_match_gate_is_a_scaled_cosine_of_text_and_audio_in_its_own_space_plus_a_bias():
    """gate = "match": logit = s cos(P_t t, P_a a_f) + b on the standardised audio of each frame; nothing of the
    text-free gate or the fusion's a' enters, so a sound opens the gate only as far as the caption matches it."""
    batch, text = videos(), torch.randn(3, D)
    model = head(gate="match")
    heard = model.audio_stats(batch.audio) * batch.mask.float().unsqueeze(-1)
    cos = torch.nn.functional.cosine_similarity(
        model.match_text(model.encode_text(text))[:, None, None, :], model.match_audio(heard)[None], dim=-1
    )
    expected = torch.sigmoid(model.match_scale.exp() * cos + model.match_bias) * batch.mask.float()
    torch.testing.assert_close(model.pool(model.encode_text(text), batch).gates, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        model.gate0.weight += 5.0  # the stage-1 gate and the linear text gate are not used
        model.gate.weight += 5.0
    torch.testing.assert_close(model.pool(model.encode_text(text), batch).gates, expected, atol=1e-5, rtol=1e-5)
    fresh = GAISHead(D, DA, T, {"gate": "match", "gate_init": 0.1})  # before training: gate_init on average
    assert float(torch.sigmoid(fresh.match_bias)) == pytest.approx(0.1)


def test_the_gate_match_loss_is_siglips_sigmoid_loss_over_heard_frames():
    logits = torch.randn(3, 4, T)
    heard = torch.rand(4, T) > 0.3
    heard[2] = False  # a clip without sound adds nothing
    positives = torch.tensor([1, 0, 3])
    expected = 0.0
    for i in range(3):
        for j in range(4):
            if heard[j].any():
                sign = 1.0 if j == positives[i] else -1.0
                expected += torch.nn.functional.softplus(-sign * logits[i, j][heard[j]]).mean() / 3
    torch.testing.assert_close(gate_match_loss(logits, heard, positives).mean(), torch.as_tensor(expected))


def test_gate_match_confidence_moves_weight_to_the_positives_the_matcher_believes():
    logits = torch.randn(3, 4, T, requires_grad=True)
    heard, positives, c = torch.ones(4, T, dtype=torch.bool), torch.tensor([1, 0, 3]), 0.75
    weighted = gate_match_loss(logits, heard, positives, confidence=c)
    plain = gate_match_loss(logits, heard, positives)
    own = logits[torch.arange(3), positives]  # [3, T]: each caption's own clip
    probability = torch.sigmoid(own.detach())
    weight = (1 - c) + c * probability / probability.mean()
    assert float(weight.mean()) == pytest.approx(1.0)  # the positives' total weight is kept, only shared out
    positive = torch.nn.functional.softplus(-own)
    expected = plain - positive.mean(-1) + (weight * positive).mean(-1)  # negatives unchanged
    torch.testing.assert_close(weighted, expected)
    weighted.sum().backward()  # the weight is a constant: d/dz of w softplus(-z) = -w sigmoid(-z)
    torch.testing.assert_close(
        logits.grad[torch.arange(3), positives], -(weight * torch.sigmoid(-own.detach())) / T, atol=1e-6, rtol=1e-5
    )


def test_the_match_loss_teaches_the_gate_to_open_only_for_captions_that_name_the_sound_playing():
    """A toy pairing: half the captions carry a direction that says which of four sounds plays, the other half
    none (only the look); batches of 16 hold each sound about four times, the other clips of one sound left out
    as negatives by `same_sound`. Trained on the pairing alone (no sound labels), the gate opens for a caption
    naming its clip's sound, stays shut for the same clip under a caption that names nothing, and for a caption naming
    another sound."""
    torch.manual_seed(0)
    sounds, looks = torch.randn(4, DA) * 2, torch.randn(40, D)
    names = torch.randn(4, D) * 2
    model = GAISHead(D, DA, T, {"gate": "match", "dropout": 0.0, "text_adapter": False})
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        clip = torch.randint(0, 40, (16,))
        sound = torch.randint(0, 4, (16,))
        named = torch.rand(16) < 0.5
        text = looks[clip] + named[:, None] * names[sound]
        batch = VideoBatch(
            torch.randn(16, T, D), sounds[sound][:, None].expand(-1, T, -1).clone(), torch.ones(16, T, dtype=torch.bool)
        )
        logits = model.pool(model.encode_text(text), batch).gate_logits
        loss = gate_match_loss(logits, batch.mask, torch.arange(16), same_sound(batch.audio, batch.mask, 0.95)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    batch = VideoBatch(
        torch.randn(4, T, D), sounds[:, None].expand(-1, T, -1).clone(), torch.ones(4, T, dtype=torch.bool)
    )
    with torch.no_grad():
        naming = model.pool(model.encode_text(looks[:4] + names), batch).gates.mean(-1)  # [caption, clip]
        plain = model.pool(model.encode_text(looks[:4]), batch).gates.mean(-1)
    own, other = naming.diagonal(), naming[~torch.eye(4, dtype=torch.bool)]
    assert own.min() > 0.5 and other.max() < 0.2 and (own - plain.diagonal()).min() > 0.3


def test_same_sound_pairs_clips_whose_mean_audio_is_alike_and_never_a_clip_with_itself_or_a_silent_one():
    audio = torch.zeros(4, T, DA)
    audio[0, :, 0] = audio[1, :, 0] = 1.0  # the same sound
    audio[2, :, 1] = 1.0  # another
    heard = torch.ones(4, T, dtype=torch.bool)
    heard[3] = False  # silent: its (zero) audio is like nothing
    alike = same_sound(audio, heard, 0.95)
    assert alike.tolist() == [[False, True, False, False], [True, False, False, False], [False] * 4, [False] * 4]
