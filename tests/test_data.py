"""Training data: public formats, overlapped chunks, samples rendered exactly like the engine."""

import json

import pytest
import torch
from helpers import record_logits

from streamvlm import StreamConfig, StreamingSession
from streamvlm.cache import Kind
from streamvlm.data.chunks import ChunkStats, make_chunks, relocate, truncate_pieces
from streamvlm.data.formats import DataError, StreamRecord, read_annotations, read_seeks, write_annotations
from streamvlm.data.sample import (
    RenderOptions,
    StreamDataset,
    collate,
    render_layout,
    render_sample,
    window_draws,
)
from streamvlm.engine.prompt import Renderer
from streamvlm.sources import VideoFileSource, synthetic_frames, write_video

WORDS = ["red", "serves", "blue", "returns", "red", "scores", "now", "three", "two"]


def word_stream(seconds, every=3):
    """A word every `every` seconds (ending inside its second), plus a two-word line every 7 s."""
    words = []
    for t in range(0, seconds, every):
        words.append((t + 0.1, t + 0.6, WORDS[t % len(WORDS)]))
        if t % 7 == 0:
            words.append((t + 0.6, t + 0.9, "again"))
    return words


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    video = write_video(root / "videos" / "match.mp4", synthetic_frames(60, 2, (56, 84)), fps=2)
    record = StreamRecord(
        "videos/match.mp4",
        0.0,
        60.0,
        query="Commentate on this match.",
        previous="Red are the Foxes.",
        words=word_stream(60),
    )
    write_annotations([record], root / "train.jsonl")
    return root, video


def first_window(root, tokenizer):
    """The first 6 s window of the long video's annotation."""
    return next(make_chunks(next(read_annotations(root / "train.jsonl")), tokenizer, window_s=6, stride_s=6))


def test_annotations_round_trip_with_seeks(long_video):
    root, video = long_video
    records = list(read_annotations(root / "train.jsonl"))
    assert len(records) == 1 and records[0].video_path() == video
    seeks = json.loads((root / "train_seeks.jsonl").read_text())
    assert seeks == read_seeks(root / "train.jsonl") == [0]
    texts = records[0].second_texts()
    assert texts[0] == "red again" and texts[1] == "" and texts[3] == "returns"


def test_second_texts_use_word_end_times():
    record = StreamRecord(
        "v.mp4",
        10.0,
        13.0,
        words=[
            (9.5, 10.0, "before"),
            (10.2, 11.0, "a"),
            (10.9, 11.01, "b"),
            (12.5, 12.9, "c"),
            (12.9, 13.5, "after"),
        ],
    )
    assert record.second_texts() == ["a", "b", "c"]


def test_malformed_lines_are_named_or_counted(tmp_path):
    good = StreamRecord("v.mp4", 0.0, 5.0, words=[(0.1, 0.5, "hi")]).to_json()
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n" + json.dumps([{"role": "user"}]) + "\n")
    with pytest.raises(DataError, match=r"mixed.jsonl:2: malformed"):
        list(read_annotations(path))
    skipped = []
    assert len(list(read_annotations(path, skipped=skipped))) == 1
    assert len(skipped) == 2 and "mixed.jsonl:3" in skipped[1]


def test_chunks_overlap_and_carry_previous_text(long_video, tiny):
    root, _ = long_video
    record = next(read_annotations(root / "train.jsonl"))
    stats = ChunkStats()
    chunks = list(make_chunks(record, tiny.tokenizer, window_s=24, stride_s=12, duration_s=60.0, stats=stats))
    assert [(c.video_start, c.video_end) for c in chunks] == [(0, 24), (12, 36), (24, 48), (36, 60), (48, 60)]
    assert stats.windows == 5
    second = chunks[1]
    assert all(12 < w[1] <= 36 for w in second.words)
    spoken_before = [w[2] for w in record.words if w[1] <= 12]
    assert second.previous == "Red are the Foxes." + "".join(" " + w for w in spoken_before)
    # past the real end of the video: counted, not produced
    stats = ChunkStats()
    assert len(list(make_chunks(record, tiny.tokenizer, duration_s=30.0, stats=stats))) == 1
    assert stats.skipped_past_end == 4
    empty = StreamRecord("v.mp4", 0, 60)
    stats = ChunkStats()
    assert list(make_chunks(empty, tiny.tokenizer, stats=stats)) == [] and stats.skipped_empty == 1


def test_previous_text_is_cut_to_head_and_tail_tokens(tiny):
    pieces = ["Context here."] + [f" w{i}" for i in range(200)]
    text = truncate_pieces(pieces, tiny.tokenizer, head=20, tail=30)
    count = len(tiny.tokenizer.encode(text, add_special_tokens=False))
    assert count <= 50 and text.startswith("Context here.") and text.endswith(" w199")
    assert " w100" not in text


def test_training_sample_equals_the_engine_prompt(long_video, tiny):
    """Train/inference alignment: the engine started at the window's start with its previous text
    and replaying the window's words builds token-identical input (ids, positions, pixels)."""
    root, _ = long_video
    record = next(read_annotations(root / "train.jsonl"))
    chunk = list(make_chunks(record, tiny.tokenizer, window_s=12, stride_s=12, text_sink=6, text_window=10))[
        2
    ]
    options = RenderOptions(fps=2, text_sink=6, text_window=10)
    renderer = Renderer(tiny.tokenizer)
    layout, vision = render_layout(chunk, tiny, renderer, options)

    session = StreamingSession(
        tiny,
        StreamConfig(
            query=chunk.query,
            previous_text=chunk.previous,
            text_sink=6,
            text_window=10,
            vision_window=16,
            text_rounds=16,
        ),
    )
    source = VideoFileSource(chunk.video_path(), fps=2, start=chunk.video_start, seconds=chunk.seconds)
    for piece, text in zip(source, chunk.second_texts(), strict=True):
        session.step(piece.frames, piece.start, piece.end, reply=text)
    assert session.evictions == 0
    assert torch.equal(session.layout.token_ids(), layout.token_ids())
    assert torch.equal(session.layout.positions(), layout.positions())
    for r, (pixels, grid) in enumerate(vision):
        assert torch.equal(session.pixels[r][0], pixels) and torch.equal(session.pixels[r][1], grid)
    memory = session.layout.find(Kind.MEMORY)
    assert memory.n == 16  # the previous text really was cut to head + tail


def test_labels_cover_assistant_turns_only(long_video, tiny):
    root, _ = long_video
    chunk = first_window(root, tiny.tokenizer)
    sample = render_sample(chunk, tiny, Renderer(tiny.tokenizer), RenderOptions(number_loss_weight=3.0))
    ids, labels = sample["input_ids"], sample["labels"]
    labelled = tiny.tokenizer.decode(ids[labels != -100])
    im_end = tiny.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert labelled.count("...") == 6 and int((labels == im_end).sum()) == 6
    assert "Time=" not in labelled and "assistant" not in labelled and "Foxes" not in labelled
    assert sample["position_ids"].shape == (3, ids.numel())
    assert sample["video_grid_thw"].shape == (6, 3)
    # a forward pass accepts the sample and yields a finite loss
    out = tiny.model(
        input_ids=ids[None],
        position_ids=sample["position_ids"][:, None],
        pixel_values_videos=sample["pixel_values_videos"],
        video_grid_thw=sample["video_grid_thw"],
        labels=labels[None],
    )
    assert torch.isfinite(out.loss)


def test_dataset_checks_records_and_collates(long_video, tiny, tmp_path):
    root, video = long_video
    record = next(read_annotations(root / "train.jsonl"))
    chunks = list(make_chunks(record, tiny.tokenizer, window_s=8, stride_s=8))
    bad = [
        StreamRecord("videos/match.mp4", 50.0, 70.0, words=[(51, 52, "x")]),
        StreamRecord("videos/missing.mp4", 0.0, 8.0, words=[(1, 2, "x")]),
    ]
    write_annotations(chunks[:3] + bad, root / "chunks.jsonl")
    with pytest.raises(DataError, match="past the end"):
        StreamDataset([root / "chunks.jsonl"], tiny, RenderOptions())
    dataset = StreamDataset([root / "chunks.jsonl"], tiny, RenderOptions(), skip_bad=True)
    assert len(dataset) == 3 and len(dataset.skipped) == 2
    batch = collate([dataset[0], dataset[1]], pad_id=0)
    assert batch["input_ids"].shape[0] == 2 and batch["position_ids"].shape[:2] == (3, 2)
    assert batch["video_grid_thw"].shape == (16, 3)
    out = tiny.model(**{k: v for k, v in batch.items() if k != "loss_weights"})
    assert torch.isfinite(out.loss)


def test_make_chunks_command(long_video, tiny_dir, tmp_path, capsys):
    from streamvlm.cli import main

    root, video = long_video
    out = tmp_path / "elsewhere" / "chunks.jsonl"
    assert main(["make-chunks", str(root / "train.jsonl"), "--out", str(out), "--model", str(tiny_dir)]) == 0
    chunks = list(read_annotations(out))
    assert [c.video_start for c in chunks] == [0, 12, 24, 36, 48]
    assert all(c.video_path().resolve() == video.resolve() for c in chunks)  # paths rewritten for the new dir
    assert "5 windows" in capsys.readouterr().err
    (tmp_path / "broken.jsonl").write_text("{oops\n")
    assert (
        main(["make-chunks", str(tmp_path / "broken.jsonl"), "--out", str(out), "--model", str(tiny_dir)])
        == 2
    )
    assert "broken.jsonl:1: malformed" in capsys.readouterr().err


def test_text_only_windows_keep_the_turns_and_drop_the_frames(long_video, tiny):
    root, _ = long_video
    chunk = first_window(root, tiny.tokenizer)
    renderer, options = Renderer(tiny.tokenizer), RenderOptions()
    with_frames = render_sample(chunk, tiny, renderer, options)
    text_only = render_sample(chunk, tiny, renderer, options, text_only=True)
    video = tiny.config.video_token_id
    assert text_only["pixel_values_videos"] is None and not (text_only["input_ids"] == video).any()
    keep = (with_frames["input_ids"] != video) & ~torch.isin(
        with_frames["input_ids"], torch.tensor([renderer.vision_start, renderer.vision_end])
    )
    assert torch.equal(with_frames["input_ids"][keep], text_only["input_ids"])
    assert torch.equal(with_frames["labels"][keep], text_only["labels"])
    batch = collate([with_frames, text_only], pad_id=0)  # mixed batch: frames only for the first sample
    assert batch["video_grid_thw"].shape[0] == 6
    out = tiny.model(**{k: v for k, v in batch.items() if k != "loss_weights"})
    assert torch.isfinite(out.loss)


def test_text_only_windows_can_teach_the_numbers_alone(long_video, tiny, tmp_path):
    root, video = long_video
    words = [(0.1, 0.4, "red"), (0.4, 0.6, "scores"), (0.6, 0.9, "3"), (2.1, 2.5, "blue"), (2.5, 2.9, "4")]
    write_annotations([StreamRecord(str(video), 0.0, 6.0, words=words)], tmp_path / "n.jsonl")
    record = next(read_annotations(tmp_path / "n.jsonl"))
    renderer = Renderer(tiny.tokenizer)
    everything = render_sample(record, tiny, renderer, RenderOptions(), text_only=True)
    numbers = render_sample(record, tiny, renderer, RenderOptions(text_only_labels="numbers"), text_only=True)
    kept = numbers["labels"] != -100
    assert torch.equal(numbers["input_ids"], everything["input_ids"])
    assert (everything["labels"][kept] == numbers["labels"][kept]).all()  # a subset of the reply labels
    assert [tiny.tokenizer.decode([i]).strip() for i in numbers["input_ids"][kept]] == ["3", "4"]
    # windows with frames keep every reply label whatever the option says
    framed = render_sample(record, tiny, renderer, RenderOptions(text_only_labels="numbers"))
    assert "scores" in tiny.tokenizer.decode(framed["input_ids"][framed["labels"] != -100])


def test_time_shift_moves_only_the_time_labels(long_video, tiny):
    root, _ = long_video
    chunk = first_window(root, tiny.tokenizer)
    renderer, options = Renderer(tiny.tokenizer), RenderOptions()
    plain = render_sample(chunk, tiny, renderer, options)
    shifted = render_sample(chunk, tiny, renderer, options, time_shift=3000)
    text = tiny.tokenizer.decode(shifted["input_ids"])
    assert "Time=3000.0-3001.0s" in text and "Time=3005.0-3006.0s" in text and "Time=0.0-1.0s" not in text
    assert torch.equal(plain["pixel_values_videos"], shifted["pixel_values_videos"])  # the same frames
    decode_labels = [tiny.tokenizer.decode(s["labels"][s["labels"] != -100]) for s in (plain, shifted)]
    assert decode_labels[0] == decode_labels[1]  # and the same replies

    draws = [window_draws(i, RenderOptions(time_shift_max=7200)) for i in range(400)]
    shifts = [s for _, s in draws]
    assert 0.4 < sum(s == 0 for s in shifts) / len(shifts) < 0.6  # half the windows keep their times
    assert max(shifts) > 6000 and all(0 <= s <= 7200 for s in shifts)
    assert draws == [window_draws(i, RenderOptions(time_shift_max=7200)) for i in range(400)]  # deterministic
    assert {window_draws(i, RenderOptions())[1] for i in range(100)} == {0}  # off by default


def test_teacher_forced_number_accuracy_counts_each_number(long_video, tiny, tmp_path):
    from types import SimpleNamespace

    from streamvlm_world.numbers import number_accuracy

    _, video = long_video
    words = [(0.1, 0.4, "red"), (0.4, 0.6, "scores"), (0.6, 0.9, "3"), (2.1, 2.5, "blue"), (2.5, 2.9, "4")]
    write_annotations([StreamRecord(str(video), 0.0, 6.0, words=words)] * 2, tmp_path / "n.jsonl")
    dataset = StreamDataset([tmp_path / "n.jsonl"], tiny, RenderOptions())

    class Oracle(torch.nn.Module):  # logits at i put all mass on token i + 1 (or on token 0: `wrong`)
        def __init__(self, wrong=False):
            super().__init__()
            self.wrong = wrong

        def forward(self, input_ids, **_):
            target = torch.zeros_like(input_ids) if self.wrong else input_ids.roll(-1, dims=1)
            return SimpleNamespace(logits=torch.nn.functional.one_hot(target, len(tiny.tokenizer)).float())

    right = number_accuracy(SimpleNamespace(model=Oracle(), tokenizer=tiny.tokenizer), dataset)
    assert right == {
        "accuracy": 1.0,
        "numbers": 4,
        "windows": 2,
        "by_line": {"other": {"accuracy": 1.0, "numbers": 2}, "scores": {"accuracy": 1.0, "numbers": 2}},
    }
    wrong = number_accuracy(SimpleNamespace(model=Oracle(wrong=True), tokenizer=tiny.tokenizer), dataset, [0])
    assert wrong["accuracy"] == 0.0 and wrong["numbers"] == 2 and wrong["windows"] == 1


def test_eval_numbers_command(long_video, tiny_dir, tmp_path, capsys):
    from streamvlm.cli import main

    _, video = long_video
    words = [(0.1, 0.4, "red"), (0.4, 0.6, "scores"), (0.6, 0.9, "3")]
    write_annotations([StreamRecord(str(video), 0.0, 3.0, words=words)], tmp_path / "n.jsonl")
    assert main(["eval", "numbers", str(tmp_path / "n.jsonl"), "--model", str(tiny_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["numbers"] == 1 and report["windows"] == 1 and list(report["by_line"]) == ["scores"]
    assert main(["eval", "numbers", str(tmp_path / "missing.jsonl"), "--model", str(tiny_dir)]) == 2


def test_text_data_windows_are_frameless_and_never_open_their_videos(tiny, tiny_dir, tmp_path, capsys):
    from streamvlm.cli import main

    words = [(0.1, 0.4, "red"), (0.4, 0.6, "scores"), (0.6, 0.9, "3"), (6.1, 6.5, "blue"), (6.5, 6.9, "4")]
    record = StreamRecord("videos/never.mp4", 0.0, 12.0, query="Commentate.", words=words)
    write_annotations([record], tmp_path / "text" / "annotations.jsonl")
    out = tmp_path / "chunks" / "text.jsonl"
    argv = ["make-chunks", str(tmp_path / "text" / "annotations.jsonl"), "--out", str(out)]
    argv += ["--model", str(tiny_dir), "--window", "6", "--stride", "6"]
    assert main(argv) == 2 and "never.mp4 not found" in capsys.readouterr().err  # videos are required...
    assert main([*argv, "--text-only"]) == 0  # ...unless the records are commentary only
    chunks = list(read_annotations(out))
    assert [(c.video_start, c.video_end) for c in chunks] == [(0, 6), (6, 12)]
    assert chunks[1].previous.split() == ["red", "scores", "3"]
    assert chunks[0].video == "../text/videos/never.mp4"  # relative to the chunks file, as with videos
    absolute = StreamRecord(str(tmp_path / "gone.mp4"), 0.0, 6.0, words=words)  # absolute, missing
    assert relocate(absolute, out.parent, text_only=True).video == "../gone.mp4"
    with pytest.raises(DataError, match="not found"):
        relocate(absolute, out.parent)
    with pytest.raises(DataError, match="not found"):
        StreamDataset([out], tiny, RenderOptions())
    dataset = StreamDataset([], tiny, RenderOptions(text_only_labels="numbers"), text_paths=[out])
    assert len(dataset) == 2
    sample = dataset[1]
    assert sample["pixel_values_videos"] is None
    assert not (sample["input_ids"] == tiny.config.video_token_id).any()
    expected = render_sample(
        chunks[1], tiny, Renderer(tiny.tokenizer), RenderOptions(text_only_labels="numbers"), text_only=True
    )
    assert torch.equal(sample["input_ids"], expected["input_ids"])
    said = sample["input_ids"][sample["labels"] != -100]
    assert [tiny.tokenizer.decode([i]).strip() for i in said] == ["4"]  # numbers only, as configured


def test_streaming_mask_gives_each_round_what_the_engine_keeps(long_video, tiny):
    """One forward pass over a window with `streaming_mask` computes, for every round, the logits the
    engine computes while streaming it (streaming policy, append positions so that no position moves,
    each reply fed in its own round): older rounds' frames and shells gone, their words in the text
    memory, cut to head + tail. Full attention over the same window does not."""
    root, _ = long_video
    record = next(read_annotations(root / "train.jsonl"))
    chunks = make_chunks(record, tiny.tokenizer, window_s=12, stride_s=12, text_sink=6, text_window=10)
    chunk = list(chunks)[2]
    windows = {"text_sink": 6, "text_window": 10, "vision_window": 3, "text_rounds": 3}
    options = RenderOptions(fps=2, streaming_mask=True, **windows)
    renderer = Renderer(tiny.tokenizer)
    sample = render_sample(chunk, tiny, renderer, options)
    layout, _ = render_layout(chunk, tiny, renderer, options)
    visible = sample["visible"]
    n = sample["input_ids"].numel()
    assert visible.shape == (n, n) and not visible.triu(1).any()

    session = StreamingSession(
        tiny, StreamConfig(query=chunk.query, previous_text=chunk.previous, positions="append", **windows)
    )
    session.trace = record_logits(session)
    source = VideoFileSource(chunk.video_path(), fps=2, start=chunk.video_start, seconds=chunk.seconds)
    for piece, text in zip(source, chunk.second_texts(), strict=True):
        session.step(piece.frames, piece.start, piece.end, reply=text)
        session.feed()  # the reply in its own round, as generation feeds it
    assert session.evictions > 0
    ends, start = {}, 0  # index of the last token of each round's reply opener and reply closer
    for span in layout.spans:
        start += span.n
        if span.kind in (Kind.REPLY_OPEN, Kind.REPLY_CLOSE):
            ends[(span.round, span.kind)] = start - 1
    where = [ends[(r, k)] for r in layout.rounds() for k in (Kind.REPLY_OPEN, Kind.REPLY_CLOSE)]
    engine = torch.stack([logits for _, _, logits in session.trace])

    def forward(mask):
        with torch.no_grad():
            out = tiny.model(
                input_ids=sample["input_ids"][None],
                position_ids=sample["position_ids"][:, None],
                attention_mask=mask,
                pixel_values_videos=sample["pixel_values_videos"],
                video_grid_thw=sample["video_grid_thw"],
            )
        return out.logits[0, where].float()

    torch.testing.assert_close(forward(visible[None, None]), engine, atol=1e-4, rtol=1e-4)
    full = forward(torch.ones(1, n, dtype=torch.long))
    assert not torch.allclose(full, engine, atol=1e-3)
    batch = collate([sample, render_sample(first_window(root, tiny.tokenizer), tiny, renderer, options)], 0)
    mask = batch["attention_mask"]
    assert mask.shape == (2, 1, n, n) and torch.equal(mask[0, 0], visible)
    assert mask[1, 0].sum(-1).min() >= 1  # padding rows see themselves: no empty softmax row


def test_number_table_belongs_to_its_tokenizer_and_dies_with_it(tiny_dir):
    # keyed by id(), a table outlived its tokenizer and was handed to the next one at the same address
    import gc
    import weakref

    from transformers import AutoTokenizer

    from streamvlm.data import sample

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    other = AutoTokenizer.from_pretrained(str(tiny_dir))
    table = sample.number_tokens(tokenizer)
    assert sample.number_tokens(tokenizer) is table and sample.number_tokens(other) is not table
    assert table.numel() == max(tokenizer.get_vocab().values()) + 1
    assert table[tokenizer.encode("7", add_special_tokens=False)].all()
    assert not table[tokenizer.encode(" Red", add_special_tokens=False)].any()
    before, alive = len(sample._NUMBERS), weakref.ref(tokenizer)
    del tokenizer, table
    gc.collect()
    assert alive() is None and len(sample._NUMBERS) == before - 1  # the cache keeps no dead entry
