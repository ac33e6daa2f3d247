"""Metrics against small similarity matrices worked out by hand."""

import numpy as np
import pytest

from gais_pipe.retrieval.metrics import dual_softmax, pessimistic_ranks, text_to_video, video_to_text


def test_ranks_by_hand():
    scores = np.array(
        [
            [0.9, 0.1, 0.5],  # answer 0 is best: rank 1
            [0.2, 0.3, 0.8],  # answer 1 is below video 2: rank 2
            [0.7, 0.6, 0.1],
        ]
    )  # answer 2 is last: rank 3
    assert pessimistic_ranks(scores, np.array([0, 1, 2])).tolist() == [1, 2, 3]
    metrics = text_to_video(scores, np.array([0, 1, 2]))
    assert metrics["R@1"] == pytest.approx(100 / 3) and metrics["R@5"] == 100.0
    assert metrics["MdR"] == 2.0 and metrics["MnR"] == 2.0


def test_ties_count_against_the_answer():
    # A model that cannot tell videos apart (all scores equal) gets the worst rank, not the best.
    flat = np.zeros((4, 4))
    assert pessimistic_ranks(flat, np.arange(4)).tolist() == [4, 4, 4, 4]
    assert text_to_video(flat, np.arange(4))["R@1"] == 0.0
    tie = np.array([[0.5, 0.5, 0.1]])  # answer tied with one other candidate: rank 2
    assert pessimistic_ranks(tie, np.array([0])).tolist() == [2]


def test_video_to_text_counts_the_best_ranked_caption_of_each_video():
    # 4 texts, 2 videos; texts 0, 1 describe video 0, texts 2, 3 describe video 1.
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.4], [0.2, 0.7]])
    caption_video = np.array([0, 0, 1, 1])
    # video 0 column: [0.1, 0.8, 0.3, 0.2]: text 1 ranks 1st -> rank 1
    # video 1 column: [0.9, 0.2, 0.4, 0.7]: text 3 ranks 2nd, text 2 ranks 3rd -> best rank 2
    metrics = video_to_text(scores, caption_video)
    assert metrics["R@1"] == 50.0 and metrics["MnR"] == 1.5 and metrics["count"] == 2
    t2v = text_to_video(scores, caption_video)  # per text: ranks 2, 1, 1, 1
    assert t2v["R@1"] == 75.0 and t2v["count"] == 4


def test_shape_and_nan_checks():
    with pytest.raises(ValueError, match="do not match"):
        text_to_video(np.zeros((3, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="outside"):
        text_to_video(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match="NaN"):
        text_to_video(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="no caption"):
        video_to_text(np.zeros((2, 3)), np.array([0, 1]))


def test_dual_softmax_reweights_by_the_whole_query_set():
    # Text 1 wants video 0 more than text 0 does (0.95 > 0.9), so with DSL text 0 turns to video 1.
    scores = np.array([[0.9, 0.8], [0.95, 0.1]])
    rescaled = dual_softmax(scores, temperature=1000.0)
    assert np.argmax(scores[0]) == 0 and np.argmax(rescaled[0]) == 1
    np.testing.assert_allclose(rescaled, [[0.0, 0.8], [0.95, 0.0]], atol=1e-6)


def test_text_to_video_loss_keeps_measuring_after_recall_saturates():
    from gais_pipe.retrieval.evaluate import text_to_video_loss

    caption_video = np.array([0, 0, 1, 2])
    confident = np.eye(3)[caption_video] * 0.9  # every caption's video first, by a wide margin
    narrow = np.eye(3)[caption_video] * 0.1 + 0.4  # still first (recall 100), by a narrow margin
    assert text_to_video(narrow, caption_video)["R@1"] == text_to_video(confident, caption_video)["R@1"] == 100
    assert text_to_video_loss(confident, caption_video, 20.0) < text_to_video_loss(narrow, caption_video, 20.0)
    assert text_to_video_loss(narrow, caption_video, 20.0) < text_to_video_loss(1 - narrow, caption_video, 20.0)


def test_margin_and_mrr_keep_measuring_what_recall_cannot():
    from gais_pipe.retrieval.evaluate import text_to_video_margin

    caption_video = np.array([0, 0, 1, 2])
    confident = np.eye(3)[caption_video] * 0.9
    narrow = np.eye(3)[caption_video] * 0.1 + 0.4
    assert text_to_video_margin(confident, caption_video) == pytest.approx(0.9)
    assert text_to_video_margin(narrow, caption_video) == pytest.approx(0.1)
    assert text_to_video_margin(1 - narrow, caption_video) == pytest.approx(-0.1)  # every caption's video last
    # MRR: ranks 1, 2, 3 and 1 (pessimistic ties) -> (1 + 1/2 + 1/3 + 1) / 4
    scores = np.array([[0.9, 0.1, 0.0], [0.5, 0.6, 0.0], [0.3, 0.3, 0.3], [0.0, 0.0, 1.0]])
    assert text_to_video(scores, caption_video)["MRR"] == pytest.approx(100 * (1 + 1 / 2 + 1 / 3 + 1) / 4)
