"""World streams on disk: one video with its truth rows, and datasets of long annotated videos.

A dataset directory reads like the public Inf-Stream-Train data, so training reads both the same way:

    OUT_DIR/annotations.jsonl        one conversation per video (format below)
    OUT_DIR/annotations_seeks.jsonl  a single JSON array: byte offset of each line of annotations.jsonl
    OUT_DIR/world.json               the world config, each video's world seed and opening text
    OUT_DIR/videos/world_0000.mp4    the videos (H.264, `fps` frames per second)
    OUT_DIR/videos/world_0000.truth.jsonl   per-second truth rows, as `streamvlm world video --truth`

    [{"role": "user", "content": [
        {"type": "video", "video": "videos/world_0000.mp4", "video_start": 0.0, "video_end": 600.0},
        {"type": "text", "text": "Commentate on this match.", "previous": "Red are the Foxes. ..."}]},
     {"role": "assistant", "content": [
        {"type": "text_stream", "text_stream": [[1.0, 1.475, "Blue"], [1.475, 1.95, "serves"], ...]}]}]

Video paths are relative to the annotation file's directory. A text-only dataset (`render=False`)
writes the same annotations and manifest but no video or truth files: its windows are for training
the text skills without frames (`TrainConfig.text_data`), and generating one costs no rendering.
"""

import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

from streamvlm.errors import StreamvlmError

from .config import WorldConfig
from .stream import World

ANNOTATIONS = "annotations.jsonl"
SEEKS = "annotations_seeks.jsonl"
MANIFEST = "world.json"


def video_seed(dataset_seed: int, index: int) -> int:
    """World seed of video `index` of the dataset with seed `dataset_seed` (distinct for index < 10**6)."""
    return dataset_seed * 1_000_000 + index


def write_world_video(
    path: str | Path, world: World, seconds: int, truth: str | Path | None = None, progress=None
) -> list[list]:
    """Encode the first `seconds` of `world` to `path` (and its truth rows to `truth`); the words.

    `progress` is anything with `update(n)` (a tqdm bar), told once per second written.
    """
    from streamvlm.sources import write_video  # PyAV: only when a file is written

    if seconds < 1:
        raise StreamvlmError(f"seconds must be >= 1, got {seconds}")
    path = Path(path)
    if path.is_dir():
        raise StreamvlmError(f"{path} is a directory, expected a video file name such as out.mp4")
    words: list[list] = []
    with _open(truth) if truth is not None else nullcontext() as truth_file:

        def frames() -> Iterator:
            for second_frames, row in world.seconds(seconds):
                words.extend(row["words"])
                if truth_file is not None:
                    truth_file.write(json.dumps(row) + "\n")
                yield from second_frames
                if progress is not None:
                    progress.update(1)

        try:
            _make_parent(path)
            write_video(path, frames(), world.config.fps)
        except (OSError, ValueError) as exc:  # PyAV's errors are OSError / ValueError subclasses
            raise StreamvlmError(f"cannot write video {path}: {exc}") from exc
    return words


def conversation(video: str, seconds: int, world: World, words: list[list]) -> list[dict]:
    """One Inf-Stream-Train conversation for a whole world video."""
    user = [
        {"type": "video", "video": video, "video_start": 0.0, "video_end": float(seconds)},
        {"type": "text", "text": world.config.query, "previous": world.opening_text},
    ]
    assistant = [{"type": "text_stream", "text_stream": words}]
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def write_dataset(
    out_dir: str | Path,
    videos: int,
    seconds: int,
    config: WorldConfig | None = None,
    progress=None,
    render: bool = True,
    workers: int = 1,
) -> Path:
    """Write `videos` world videos of `seconds` each plus annotations; the annotation file's path.

    Video i plays world seed `video_seed(config.seed, i)`. Existing files of the same names are
    replaced. With `render=False` only the annotations are written (the named videos do not exist).
    `workers` processes render and encode the videos side by side (the same frames and annotations).
    """
    config = config or WorldConfig()
    if videos < 1:
        raise StreamvlmError(f"videos must be >= 1, got {videos}")
    if seconds < 1:
        raise StreamvlmError(f"seconds must be >= 1, got {seconds}")
    if workers < 1:
        raise StreamvlmError(f"workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    jobs = [
        (out_dir, f"videos/world_{i:04d}.mp4", replace(config, seed=video_seed(config.seed, i)), seconds)
        for i in range(videos)
    ]
    offsets, entries = [], []
    with (
        ProcessPoolExecutor(workers) if render and workers > 1 else nullcontext() as pool,
        _open(out_dir / ANNOTATIONS, "wb") as annotations,
    ):
        if not render:
            written = ([w for row in World(job[2]).rows(seconds) for w in row["words"]] for job in jobs)
        elif pool is not None:
            written = pool.map(_write_video, jobs)
        else:  # in this process: the bar moves second by second
            written = (_write_video(job, progress) for job in jobs)
        for (_, rel, video_config, _), words in zip(jobs, written, strict=True):
            world = World(video_config)
            if progress is not None and (pool is not None or not render):
                progress.update(seconds)
            offsets.append(annotations.tell())
            annotations.write((json.dumps(conversation(rel, seconds, world, words)) + "\n").encode())
            entries.append({"video": rel, "seed": world.config.seed, "previous": world.opening_text})
    with _open(out_dir / SEEKS) as f:
        json.dump(offsets, f)
    manifest = {
        "videos": videos,
        "seconds": seconds,
        "videos_written": render,
        "config": config.to_dict(),
        "entries": entries,
    }
    with _open(out_dir / MANIFEST) as f:
        json.dump(manifest, f, indent=1)
    return out_dir / ANNOTATIONS


def _write_video(job: tuple, progress=None) -> list[list]:
    """One dataset video with its truth file (a job of `write_dataset`); its words."""
    out_dir, rel, config, seconds = job
    video = out_dir / rel
    truth = video.with_suffix(".truth.jsonl")
    return write_world_video(video, World(config), seconds, truth=truth, progress=progress)


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StreamvlmError(f"cannot create the directory for {path}: {exc.strerror or exc}") from exc


def _open(path: str | Path, mode: str = "w"):
    """`open(path, mode)`, creating the parent directory; OS errors become one-line StreamvlmErrors."""
    path = Path(path)
    _make_parent(path)
    try:
        return open(path, mode)
    except OSError as exc:
        raise StreamvlmError(f"cannot write {path}: {exc.strerror or exc}") from exc
