"""Spans, plans and policies without a model."""

import torch

from streamvlm.cache import Kind, Layout, Span, Windows, make_policy


def vision_offsets(h=2, w=3):
    hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack((torch.zeros(h * w, dtype=torch.long), hh.reshape(-1), ww.reshape(-1)))


def round_spans(r, reply=(7, 8)):
    return [
        Span(Kind.USER_OPEN, [1, 2], r),
        Span(Kind.TIME, [3], r),
        Span(Kind.VISION_OPEN, [4], r),
        Span(Kind.VISION, [5] * 6, r, rel=vision_offsets()),
        Span(Kind.VISION_CLOSE, [6], r),
        Span(Kind.USER_CLOSE, [1, 2], r),
        Span(Kind.REPLY_OPEN, [1, 2], r),
        Span(Kind.REPLY, list(reply), r),
        Span(Kind.REPLY_CLOSE, [9, 1, 2], r),
    ]


def build(rounds, contiguous=True):
    layout = Layout(contiguous)
    layout.extend([Span(Kind.PREFIX, [1, 2, 3]), Span(Kind.MEMORY, [10, 11]), Span(Kind.MEMORY_END, [1, 2])])
    for r in range(rounds):
        layout.extend(round_spans(r, reply=(20 + r, 30 + r)))
    layout.mark_fed()
    layout.commit()
    return layout


def test_vision_span_advances_by_its_extent():
    layout = build(1)
    vision = layout.find(Kind.VISION, 0)
    start = int(vision.pos[0, 0])
    assert vision.extent == 3  # max(h, w) offsets + 1
    assert int(layout.find(Kind.VISION_CLOSE, 0).pos[0, 0]) == start + 3
    assert torch.equal(vision.pos[1], start + vision_offsets()[1])


def test_streaming_moves_reply_into_memory_and_reindexes():
    layout = build(3)
    before = layout.token_ids()
    make_policy("streaming", Windows(2, 2, 1, 2)).retire(layout, 2)
    src, delta = layout.commit()
    memory = layout.find(Kind.MEMORY)
    # memory was [10, 11]; round 0's reply [20, 30] moved in; cut to head 1 + tail 2
    assert memory.ids.tolist() == [10, 20, 30]
    assert layout.rounds() == [1, 2]
    assert torch.equal(layout.token_ids(), before[src])  # the plan keeps exactly the retained rows
    pos = layout.positions()
    assert pos[0, 0] == 0 and bool((delta[:3] == 0).all())  # prefix untouched
    text_pos = pos[:, [i for i, s in enumerate(layout.spans) if s.kind != Kind.VISION]]
    assert text_pos.shape[1] > 0


def test_positions_are_contiguous_after_commit():
    layout = build(4)
    make_policy("streaming", Windows(1, 3, 0, 1)).retire(layout, 4)
    layout.commit()
    expected = 0
    for span in layout.spans:
        assert int(span.pos[0].min()) == expected
        expected += span.extent
    assert layout.max_position() == expected - 1


def test_append_positions_leave_gaps_and_keep_growing():
    layout = build(3, contiguous=False)
    end = layout.next_position
    make_policy("streaming", Windows(1, 1, 0, 0)).retire(layout, 3)
    src, delta = layout.commit()
    assert not delta.any()
    assert layout.next_position == end
    layout.extend(round_spans(3))
    assert int(layout.find(Kind.USER_OPEN, 3).pos[0, 0]) == end


def test_sliding_resets_and_full_keeps():
    layout = build(4)
    make_policy("full").retire(layout, 4)
    assert layout.rounds() == [0, 1, 2, 3]
    make_policy("sliding", reset_every=4).retire(layout, 4)
    assert layout.rounds() == []
    assert [s.kind for s in layout.spans] == [Kind.PREFIX, Kind.MEMORY, Kind.MEMORY_END]


def test_uneven_windows_keep_the_turn_shell():
    layout = build(3)
    make_policy("streaming", Windows(3, 1, 9, 9)).retire(layout, 2)
    kinds0 = [s.kind for s in layout.spans if s.round == 0]
    assert kinds0 == [Kind.USER_OPEN, Kind.VISION_OPEN, Kind.VISION, Kind.VISION_CLOSE, Kind.USER_CLOSE]
    layout = build(3)
    make_policy("streaming", Windows(1, 3, 9, 9)).retire(layout, 3)
    kinds1 = [s.kind for s in layout.spans if s.round == 1]
    assert Kind.VISION not in kinds1 and Kind.REPLY in kinds1 and Kind.USER_OPEN in kinds1


def test_restore_undoes_appends_and_feeds_after_a_snapshot():
    layout = Layout()
    layout.extend([Span(Kind.PREFIX, [1, 2, 3]), *round_spans(0)])
    layout.mark_fed()
    layout.append_tokens(Kind.REPLY, 0, [9])  # pending, not fed
    before = (layout.token_ids(), layout.positions(), [s.rows for s in layout.spans], layout.fed_rows)
    snapshot = layout.snapshot()
    layout.append_tokens(Kind.REPLY, 0, [10])  # grows the last span in place
    layout.append(Span(Kind.USER_OPEN, [4, 5], 1))
    layout.mark_fed()
    assert layout.fed_rows == before[3] + 4 and len(layout) == len(before[0]) + 3
    layout.restore(snapshot)
    after = (layout.token_ids(), layout.positions(), [s.rows for s in layout.spans], layout.fed_rows)
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1]) and after[3] == before[3]
    assert all(torch.equal(a, b) for a, b in zip(after[2], before[2], strict=True))
    assert layout.next_position == int(layout.positions().max()) + 1
