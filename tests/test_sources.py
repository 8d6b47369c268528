"""Frame sources: sampling, seeking, image folders and every kind of bad input."""

import av
import numpy as np
import pytest
from PIL import Image

from streamvlm.errors import SourceError
from streamvlm.sources import ImageFolderSource, VideoFileSource, open_source, synthetic_frames, write_video


def numbered_frames(n, size=(64, 64)):
    """Flat grey frames whose level encodes the frame index (survives lossy coding)."""
    for i in range(n):
        yield np.full((*size, 3), 20 * (i % 12) + 10, dtype=np.uint8)


def frame_index(frame):
    return int(round((float(frame.mean()) - 10) / 20))


@pytest.fixture(scope="module")
def fast_clip(tmp_path_factory):
    """10 s at 15 fps, keyframe every 2 s: sampling at 2 fps must pick frames by time, not order."""
    return write_video(tmp_path_factory.mktemp("fast") / "fast.mp4", numbered_frames(150), fps=15)


def test_samples_the_frame_shown_at_each_time(fast_clip):
    chunks = list(VideoFileSource(fast_clip, fps=2))
    assert len(chunks) == 10
    for chunk in chunks:
        for j, frame in enumerate(chunk.frames):
            assert (
                frame_index(frame) == int((chunk.start + j / 2) * 15 + 1e-6) % 12
            )  # last frame with pts <= t


def test_seek_lands_before_and_decodes_forward(fast_clip):
    """A start between keyframes gives the same frames as decoding from the beginning."""
    whole = list(VideoFileSource(fast_clip, fps=2))
    for start in (3.0, 3.5, 5.25):
        part = list(VideoFileSource(fast_clip, fps=2, start=start, seconds=3))
        assert [c.start for c in part] == [start, start + 1, start + 2]
        for chunk in part:
            for j, frame in enumerate(chunk.frames):
                assert (
                    frame_index(frame) == int((chunk.start + j / 2) * 15 + 1e-6) % 12
                )  # last frame with pts <= t
    assert np.array_equal(list(VideoFileSource(fast_clip, fps=2, start=3.0))[0].frames, whole[3].frames)


def test_stream_ending_early_is_an_error_after_the_complete_seconds(clip):
    source = VideoFileSource(clip, fps=2, start=8, seconds=10)
    got = []
    with pytest.raises(SourceError, match=r"ends at 12.0 s, before the requested 10 s"):
        for chunk in source:
            got.append(chunk.start)
    assert got == [8.0, 9.0, 10.0, 11.0]
    assert len(list(VideoFileSource(clip, fps=2, start=8))) == 4  # without --seconds: to the end, no error


def test_bad_files_are_named(tmp_path, clip):
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "missing.mp4"))
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(SourceError, match="not a readable video"):
        open_source(str(text))
    with pytest.raises(SourceError, match="past the end"):
        VideoFileSource(clip, start=60)
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
    with pytest.raises(SourceError, match="has no video stream"):
        open_source(str(audio))


def test_corrupt_data_is_an_error_not_a_crash(tmp_path, clip):
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="corrupt video data"):
        list(VideoFileSource(bad, fps=2))


def test_resolution_change_mid_stream(tmp_path):
    """Two MPEG-TS segments of different sizes played back to back (as a live encoder may do)."""
    a = write_video(tmp_path / "a.ts", synthetic_frames(3, 2, (64, 96)), fps=2)
    b = write_video(tmp_path / "b.ts", synthetic_frames(3, 2, (48, 48)), fps=2)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.read_bytes() + b.read_bytes())
    with pytest.raises(SourceError, match=r"changes from 96x64 to 48x48"):
        list(VideoFileSource(joined, fps=2))
    chunks = list(VideoFileSource(joined, fps=2, allow_resolution_change=True))
    assert len(chunks) >= 3 and {c.frames.shape[1:] for c in chunks} == {(64, 96, 3)}


def test_image_folder(tmp_path):
    for i, frame in enumerate(numbered_frames(9, (30, 40))):
        Image.fromarray(frame).save(tmp_path / f"f{i:03d}.png")
    (tmp_path / "readme.txt").write_text("ignored")
    chunks = list(open_source(str(tmp_path), fps=2))
    assert len(chunks) == 4 and chunks[1].frames.shape == (2, 30, 40, 3)
    assert [frame_index(f) for f in chunks[1].frames] == [2, 3]
    assert [c.start for c in ImageFolderSource(tmp_path, fps=2, start=1)] == [1.0, 2.0, 3.0]
    with pytest.raises(SourceError, match="fewer than the requested 5 s"):
        ImageFolderSource(tmp_path, fps=2, seconds=5)
    (tmp_path / "f999.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match="cannot read image"):
        list(ImageFolderSource(tmp_path, fps=2))
