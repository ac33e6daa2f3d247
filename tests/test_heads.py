"""The GAIS heads: the fast pooling equals the naive one, and each switch does what it says."""

import itertools

import pytest
import torch

from gais_pipe.retrieval.heads import GAISHead, VideoBatch
from gais_pipe.retrieval.losses import adaptive_margin, symmetric_info_nce

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


@pytest.mark.parametrize("gate,pooling", list(itertools.product(["text", "text-free", "fixed"], ["xpool", "mean"])))
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
