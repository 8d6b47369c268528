"""`streamvlm eval generate` / `eval merge`: commentary for many videos, sharded and resumable.

    streamvlm eval generate --videos LIST_OR_DIR --out-dir gen/ [--shards N --shard-index I] [run options]
    accelerate launch -m streamvlm eval generate --videos LIST_OR_DIR --out-dir gen/ --device cuda ...
    streamvlm eval merge gen/ [more dirs...] --out gen.jsonl [--videos LIST_OR_DIR]

`generate` streams every video of its shard exactly as `streamvlm run` does and writes
`<out-dir>/<video stem>.jsonl` (one `{start, end, text}` line per second). A video is written to
`<out-dir>/.partial/` and moved into place when complete, so a video whose file exists is done: a
re-run (or a restarted shard) skips it and an interrupted video starts over. Shards: the video
list is sorted and de-duplicated, video k goes to shard k mod N. Without --shards / --shard-index
the values come from WORLD_SIZE / RANK (set by `accelerate launch` and `torchrun`), else 1 / 0;
with --device cuda each such process takes cuda:LOCAL_RANK.

`merge` gathers the per-video files of one or more output folders into the
`{"video": <stem>, "items": [{start, end, text}, ...]}` JSONL that `eval judge` reads; with
--videos it checks that every listed video is there.
"""

import argparse
import os
import sys
from pathlib import Path


def register(sub) -> None:
    from ..cli import add_stream_options, non_negative_int, positive_int

    gen = sub.add_parser(
        "generate",
        help="commentary for many videos (sharded, resumable), one <stem>.jsonl each",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("--videos", required=True, help=VIDEOS_HELP)
    gen.add_argument("--video-root", default=None, help="folder relative paths in --videos are under")
    gen.add_argument("--out-dir", required=True, help="where <video stem>.jsonl files go")
    gen.add_argument("--shards", type=positive_int, default=None, help="number of shards (WORLD_SIZE, 1)")
    gen.add_argument("--shard-index", type=non_negative_int, default=None, help="this shard (RANK, 0)")
    add_stream_options(gen, outputs=False)
    gen.set_defaults(func=cmd_generate)

    merge = sub.add_parser(
        "merge",
        help="per-video commentary files -> one {video, items} JSONL for eval judge",
        description="Merge the <video stem>.jsonl files of `eval generate` (or `streamvlm run`) folders.",
    )
    merge.add_argument("dirs", nargs="+", metavar="DIR", help="folders of <video stem>.jsonl files")
    merge.add_argument("--out", required=True, help="merged JSONL")
    merge.add_argument("--videos", default=None, help="check that every one of these videos is present")
    merge.add_argument("--video-root", default=None, help="folder relative paths in --videos are under")
    merge.add_argument("--allow-missing", action="store_true", help="with --videos: warn instead of failing")
    merge.add_argument("--debug", action="store_true", help="show tracebacks")
    merge.set_defaults(func=cmd_merge)


VIDEOS_HELP = (
    "a folder (its video files, recursively), a text file with one path per line (# comments), "
    "or a JSONL / JSON list of rows with a 'video' field (e.g. Inf-Streams-Eval metadata)"
)


# -- the video list and shards -----------------------------------------------------------------
def list_videos(spec: str, root: str | None = None) -> list[Path]:
    """Video paths from a folder, a text list or a JSONL with `video`; sorted, without duplicates."""
    from ..errors import StreamvlmError
    from ..sources.base import VIDEO_EXTENSIONS
    from .transcripts import read_jsonl

    path = Path(spec).expanduser()
    if path.is_dir():
        videos = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
        videos = [p for p in videos if ".partial" not in p.parts]
        if not videos:
            raise StreamvlmError(f"{spec}: folder holds no video files ({', '.join(VIDEO_EXTENSIONS)})")
    elif not path.is_file():
        raise StreamvlmError(f"--videos {spec}: no such file or folder")
    elif path.suffix.lower() in (".jsonl", ".json"):
        videos = []
        for number, row in read_jsonl(path):
            if not isinstance(row.get("video"), str) or not row["video"]:
                raise StreamvlmError(f"{path}:{number}: missing 'video'")
            videos.append(Path(row["video"]))
    else:
        lines = path.read_text(encoding="utf-8").splitlines()
        videos = [Path(s.strip()) for s in lines if s.strip() and not s.strip().startswith("#")]
    base = Path(root).expanduser() if root else None
    videos = sorted({(base / v if base and not v.is_absolute() else v) for v in videos})
    if not videos:
        raise StreamvlmError(f"--videos {spec}: no videos listed")
    stems: dict[str, Path] = {}
    for v in videos:
        if v.stem in stems:
            raise StreamvlmError(
                f"videos {stems[v.stem]} and {v} share the stem {v.stem!r} (one output each)"
            )
        stems[v.stem] = v
    return videos


def shard_of(videos: list, shards: int, index: int) -> list:
    """The videos of shard `index` of `shards`: every shards-th one, starting at `index`."""
    return videos[index::shards]


def resolve_shard(shards: int | None, index: int | None) -> tuple[int, int]:
    """Explicit values, else WORLD_SIZE / RANK from the environment, else one shard."""
    from ..errors import StreamvlmError

    shards = shards if shards is not None else int(os.environ.get("WORLD_SIZE", 1))
    index = index if index is not None else int(os.environ.get("RANK", 0))
    if shards < 1 or not 0 <= index < shards:
        raise StreamvlmError(f"shard index {index} is not in 0..{shards - 1}")
    return shards, index


def output_path(out_dir: Path, video: Path) -> Path:
    return out_dir / f"{video.stem}.jsonl"


# -- the commands ------------------------------------------------------------------------------
def cmd_generate(args) -> int:
    from tqdm import tqdm

    from ..cli import config_from_args
    from ..errors import SourceError
    from ..runner import load_for_run, stream_to_files
    from ..sources import VideoFileSource

    config_from_args(args)  # bad option combinations fail before anything is loaded
    shards, index = resolve_shard(args.shards, args.shard_index)
    videos = shard_of(list_videos(args.videos, args.video_root), shards, index)
    out_dir = Path(args.out_dir)
    todo = [v for v in videos if not output_path(out_dir, v).exists()]
    tag = f"shard {index}/{shards}: " if shards > 1 else ""
    print(f"{tag}{len(videos)} videos, {len(videos) - len(todo)} already done", file=sys.stderr)
    if not todo:
        return 0
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process under a launcher
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    loaded = load_for_run(args.model, device, args.dtype, args.min_pixels, args.max_pixels, quiet=args.quiet)
    config = config_from_args(args, loaded.defaults.get("stream"))
    partial = out_dir / ".partial"
    partial.mkdir(parents=True, exist_ok=True)
    failed = []
    for video in tqdm(todo, unit="video", desc=f"{tag}generate", disable=args.quiet):
        tmp = partial / output_path(out_dir, video).name
        try:
            source = VideoFileSource(
                video,
                fps=config.fps,
                start=args.start,
                seconds=args.seconds,
                allow_resolution_change=args.allow_resolution_change,
            )
            stream_to_files(loaded, config, source, out=str(tmp), quiet=True)
        except SourceError as exc:  # one bad video does not stop the shard
            failed.append(video)
            tmp.unlink(missing_ok=True)
            print(f"streamvlm: skipped {video}: {exc}", file=sys.stderr)
            continue
        os.replace(tmp, output_path(out_dir, video))
    if failed:
        print(
            f"streamvlm: {tag}{len(failed)} of {len(todo)} videos failed (run again to retry)",
            file=sys.stderr,
        )
        return 1
    return 0


def merge_dirs(
    dirs: list[str], out: str, videos: list[Path] | None = None, allow_missing: bool = False
) -> dict:
    """Write the merged `{video, items}` JSONL; returns counts (videos, items, missing)."""
    import json

    from ..errors import StreamvlmError
    from .transcripts import read_candidate, write_atomic

    merged: dict = {}
    for d in dirs:
        if not Path(d).is_dir():
            raise StreamvlmError(f"{d}: not a folder")
        for stem, generation in read_candidate(d, []).videos.items():
            if stem in merged:
                raise StreamvlmError(f"video {stem} appears in more than one of {', '.join(dirs)}")
            merged[stem] = generation
    missing = sorted({v.stem for v in videos or []} - set(merged))
    if missing and not allow_missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise StreamvlmError(f"{len(missing)} listed videos have no output yet: {shown}")
    lines = []
    for stem in sorted(merged):
        items = [{"start": s.start, "end": s.end, "text": s.text} for s in merged[stem].items]
        lines.append(json.dumps({"video": stem, "items": items}, ensure_ascii=False))
    write_atomic(out, "\n".join(lines) + "\n")
    return {"videos": len(merged), "items": sum(len(g.items) for g in merged.values()), "missing": missing}


def cmd_merge(args) -> int:
    videos = list_videos(args.videos, args.video_root) if args.videos else None
    counts = merge_dirs(args.dirs, args.out, videos, args.allow_missing)
    if counts["missing"]:
        print(f"streamvlm: {len(counts['missing'])} listed videos missing (left out)", file=sys.stderr)
    print(f"{args.out}: {counts['videos']} videos, {counts['items']} items", file=sys.stderr)
    return 0
