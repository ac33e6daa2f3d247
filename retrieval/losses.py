"""Losses (METHOD.md section 5): symmetric InfoNCE with an adaptive margin, the stage-1 term and
the optional support-text term. Each takes a full [B, B] score matrix (rows: texts, columns: videos)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_info_nce(logits: torch.Tensor) -> torch.Tensor:
    """Text i's video is video i: cross-entropy over rows and over columns, averaged."""
    targets = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def adaptive_margin(text: torch.Tensor, video: torch.Tensor, beta: float, delta: float) -> torch.Tensor:
    """m_ij = min(beta * (1 - (c^t_ij + c^v_ij) / 2), delta), m_ii = 0 (AVIGATE).

    Negatives that are semantically close to the positive (by intra-modal similarity of the frozen
    inputs) get a smaller margin, so near-duplicates are not pushed apart as hard as true negatives.
    """
    text, video = F.normalize(text.float(), dim=-1), F.normalize(video.float(), dim=-1)
    closeness = (text @ text.T + video @ video.T) / 2
    margin = (beta * (1 - closeness)).clamp(max=delta)
    return margin.fill_diagonal_(0.0)


def support_text_scores(
    text: torch.Tensor, video: torch.Tensor, radius: torch.Tensor, positives: torch.Tensor
) -> torch.Tensor:
    """T-MASS's support text: each text moved by its radius towards its own video, scored against all videos.

    text [b, D] (unit), video [b, B, D] (v_hat of text i for video j), radius [b, D] of the positive
    pairs, positives [b]: the column of each text's own video.
    """
    own = video[torch.arange(len(text)), positives]
    support = text + radius * F.normalize(own - text, dim=-1)
    return F.cosine_similarity(support.unsqueeze(1), video, dim=-1)


def radius_prior(radius: torch.Tensor, target: float) -> torch.Tensor:
    """KL( N(0, r^2 S) || N(0, r0^2 S) ) per dimension, averaged over pairs: 0.5 (rho^2 - 1 - 2 log rho),
    rho = r / r0.

    The contrastive loss alone only ever shrinks the radius (noise on the query can only cost it in
    expectation), so a learned radius collapses to 0 and the perturbation switches itself off. As in a
    variational bottleneck, this prior pulls every radius towards r0 and lets the contrastive loss
    push it down only where the noise really hurts: the radius becomes a per-pair confidence.
    """
    rho = radius.float() / target
    return 0.5 * (rho * rho - 1 - 2 * torch.log(rho)).mean()


def gate_match_loss(
    logits: torch.Tensor,
    heard: torch.Tensor,
    positives: torch.Tensor,
    ignore: torch.Tensor | None = None,
    confidence: float = 0.0,
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss on the match gate's logits, frame by frame: each caption against the
    sound of its own clip (label 1) and of every other clip in the batch (label 0).

    logits [n, B, T] (texts against the global batch's videos), heard [B, T] (frames with sound), positives
    [n]: each text's own column. Returns each text's loss, [n]: summed over videos (as SigLIP sums over the
    batch) and averaged over each video's heard frames; the caller averages over the global batch's texts.
    The labels are the pairing the retrieval loss already uses:
    no sound label from anywhere. A caption that names no sound cannot pick its clip's sound from the
    others, so its best answer is a low gate for every sound; one naming the sound playing learns a high
    one. So the gate comes to say whether the caption describes the sound, not whether there is a sound.

    `ignore` [n, B] (`augment.same_sound`): pairs left out, other clips that sound the same as the text's own. A caption
    describes their sound as well as its own clip's; as negatives they would cap a named sound's gate at one
    over the number of clips in the batch that play it (a toy with 4 sounds in batches of 16 trained the gate
    to 0.05).

    `confidence` c > 0 weighs each positive frame by (1 - c) + c x its own detached match probability over their
    mean in the batch (the positives' total weight unchanged, shifted between them): a caption whose words cannot
    pick its clip's sound (one that leaves the sound out, while its siblings name it) then pushes that sound's
    gate up less, one that names it more (loss.gate_match_confidence).
    """
    labels = -torch.ones_like(logits)
    rows = torch.arange(len(logits))
    labels[rows, positives] = 1.0
    heard = heard.float()
    per_frame = F.softplus(-labels * logits.float()) * heard
    if confidence > 0:
        own = torch.sigmoid(logits[rows, positives].detach().float())  # [n, T]
        heard_own = heard[positives]
        mean = _global_mean(own, heard_own)
        weight = torch.ones_like(per_frame)
        weight[rows, positives] = (1.0 - confidence) + confidence * own / mean.clamp_min(1e-6)
        per_frame = per_frame * weight
    if ignore is not None:
        per_frame = per_frame * (~ignore).float().unsqueeze(-1)
    per_video = per_frame.sum(-1) / heard.sum(-1).clamp_min(1.0)  # [n, B]; 0 for a clip without sound
    return per_video.sum(-1)


def _global_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask`, over every process's rows when training runs on several (torchrun), so
    that a process weighs its positives as one process would weigh the whole global batch."""
    import torch.distributed as dist

    total = torch.stack([(values * mask).sum(), mask.sum().float()])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    return total[0] / total[1].clamp_min(1.0)
