"""Generation over many videos: video lists, shard assignment, resume, merge into what `eval judge` reads."""

import json

import pytest

from streamvlm.cli import main
from streamvlm.errors import StreamvlmError
from streamvlm.eval.generate import list_videos, merge_dirs, resolve_shard, shard_of
from streamvlm.eval.transcripts import read_candidate
from streamvlm.sources import synthetic_frames, write_video


def test_every_video_goes_to_exactly_one_shard(tmp_path):
    for n in (1, 5, 7, 12):
        videos = [tmp_path / f"v{i}.mp4" for i in range(n)]
        for shards in (1, 2, 3, 8):
            parts = [shard_of(videos, shards, i) for i in range(shards)]
            assert sorted(v for p in parts for v in p) == sorted(videos)
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert resolve_shard(4, 3) == (4, 3)
    with pytest.raises(StreamvlmError, match="shard index 4"):
        resolve_shard(4, 4)


def test_shard_from_launcher_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    assert resolve_shard(None, None) == (3, 2)
    assert resolve_shard(2, 0) == (2, 0)  # explicit values win
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    assert resolve_shard(None, None) == (1, 0)


def test_video_lists(tmp_path):
    for name in ("b.mp4", "a.mkv", "sub/c.mp4", "notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    from_dir = list_videos(str(tmp_path))
    assert [v.name for v in from_dir] == ["a.mkv", "b.mp4", "c.mp4"]
    listing = tmp_path / "list.txt"
    listing.write_text("# videos\nb.mp4\n\nsub/c.mp4\nb.mp4\n")
    assert list_videos(str(listing), str(tmp_path)) == [tmp_path / "b.mp4", tmp_path / "sub/c.mp4"]
    meta = tmp_path / "meta.jsonl"
    meta.write_text(json.dumps({"video": "b.mp4", "content": []}) + "\n" + json.dumps({"content": []}) + "\n")
    with pytest.raises(StreamvlmError, match="meta.jsonl:2: missing 'video'"):
        list_videos(str(meta))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "b.mp4").write_bytes(b"")
    with pytest.raises(StreamvlmError, match="share the stem 'b'"):
        list_videos(str(tmp_path))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen-videos")
    for i in range(3):
        write_video(root / f"clip{i}.mp4", synthetic_frames(2 + i % 2, 2, (56, 84), seed=i), fps=2)
    return root


def generate(tiny_dir, videos, out_dir, *extra):
    argv = ["eval", "generate", "--videos", videos, "--out-dir", out_dir, "--model", tiny_dir]
    return main([str(a) for a in [*argv, "--greedy", "--max-new-tokens", 3, "--quiet", *extra]])


def test_generate_shards_resume_and_merge(tiny_dir, clips, tmp_path, monkeypatch):
    out = tmp_path / "gen"
    assert generate(tiny_dir, clips, out, "--shards", 2, "--shard-index", 0) == 0
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["clip0.jsonl", "clip2.jsonl"]
    # the same as `streamvlm run` on that video
    single = tmp_path / "single.jsonl"
    run = ["run", clips / "clip2.mp4", "--model", tiny_dir, "--greedy", "--max-new-tokens", 3, "--quiet"]
    assert main([str(a) for a in [*run, "--out", single]]) == 0
    assert (out / "clip2.jsonl").read_text() == single.read_text()
    assert len((out / "clip0.jsonl").read_text().splitlines()) == 2

    # shard 1 of 2 from the launcher's environment; done videos are left alone
    stamp = (out / "clip0.jsonl").stat().st_mtime_ns
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert generate(tiny_dir, clips, out) == 0
    assert sorted(p.name for p in out.glob("*.jsonl")) == ["clip0.jsonl", "clip1.jsonl", "clip2.jsonl"]
    # an interrupted video (its output missing, a partial file left behind) is done again, alone
    (out / "clip1.jsonl").unlink()
    (out / ".partial" / "clip1.jsonl").write_text('{"start": 0.0, "end": 1.0, "te')
    assert generate(tiny_dir, clips, out) == 0
    assert (out / "clip0.jsonl").stat().st_mtime_ns == stamp
    assert len((out / "clip1.jsonl").read_text().splitlines()) == 3
    assert not list((out / ".partial").iterdir())

    merged = tmp_path / "gen.jsonl"
    counts = merge_dirs([str(out)], str(merged), list_videos(str(clips)))
    assert counts == {"videos": 3, "items": 7, "missing": []}
    rows = [json.loads(line) for line in merged.read_text().splitlines()]
    assert [r["video"] for r in rows] == ["clip0", "clip1", "clip2"]
    candidate = read_candidate(merged, ["videos/clip0.mp4", "videos/clip1.mp4", "videos/clip2.mp4"])
    generation = candidate.find("videos/clip1.mp4")
    assert [(s.start, s.end) for s in generation.items] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert generation.covered == (0.0, 3.0)


def test_merge_checks_completeness_and_duplicates(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, stems in ((a, ["v1", "v2"]), (b, ["v3"])):
        d.mkdir()
        for stem in stems:
            (d / f"{stem}.jsonl").write_text(json.dumps({"start": 0.0, "end": 1.0, "text": stem}) + "\n")
    listing = tmp_path / "videos.txt"
    listing.write_text("v1.mp4\nv2.mp4\nv3.mp4\nv4.mp4\n")
    out = tmp_path / "m.jsonl"
    argv = ["eval", "merge", str(a), str(b), "--out", str(out), "--videos", str(listing)]
    assert main(argv) == 2 and not out.exists()  # v4 has no output yet
    assert main([*argv, "--allow-missing"]) == 0
    texts = [json.loads(line)["items"][0]["text"] for line in out.read_text().splitlines()]
    assert texts == ["v1", "v2", "v3"]
    (b / "v1.jsonl").write_text((a / "v1.jsonl").read_text())
    with pytest.raises(StreamvlmError, match="more than one"):
        merge_dirs([str(a), str(b)], str(out))
    (b / "v1.jsonl").write_text('{"start": 0, "end": "x"}\n')
    with pytest.raises(StreamvlmError, match="must be a number"):
        merge_dirs([str(b)], str(out))
