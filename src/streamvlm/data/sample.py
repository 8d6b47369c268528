"""Training samples rendered exactly as the engine sees the stream, and their collation.

A window becomes what the engine started at the window's start shows: system prompt, `previous
text` memory (cut to head + tail by the same `Layout.trim_memory` the engine uses), then per second
a user turn (`Time=a-bs` + that second's frames; the query after the first second's frames) and the
assistant turn (" words ..."), all through the engine's `Renderer` and `Layout` (method §7.2).
Positions are those of the final sequence (contiguous 3-D M-RoPE). Labels cover the assistant
turns from after `<|im_start|>assistant\\n` through `<|im_end|>`, silent seconds included.
"""

import logging
import os
import random
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from ..cache.layout import Kind, Layout, Span
from ..cache.policy import StreamingPolicy, Windows
from ..engine.prompt import Renderer, query_turn
from ..models.load import LoadedModel
from ..sources import VideoFileSource
from ..words import NUMBER_WORDS
from .formats import DataError, StreamRecord, read_line, read_seeks

IGNORE = -100
#: A sample's frames: as pixels, or (with vision features) as the vision tower's output
VISION_KEYS = ("pixel_values_videos", "video_embeds")
#: What `render_sample` puts in every sample; any other key is an auxiliary objective's targets.
SAMPLE_KEYS = {
    "input_ids",
    "position_ids",
    "labels",
    "loss_weights",
    "video_grid_thw",
    "visible",
    *VISION_KEYS,
}
log = logging.getLogger(__name__)


@dataclass
class RenderOptions(Windows):
    """How a window is rendered for training; the cache windows (`cache.policy.Windows`) cut its
    previous text and, with `streaming_mask`, shape its attention."""

    fps: int = 2
    system_prompt: str | None = None  # None: the renderer's default
    number_loss_weight: float = 1.0  # weight of label tokens that are numbers (e.g. an announced score)
    #: Share of windows rendered without frames (same turns, no vision tokens): a curriculum for skills
    #: that live in the text alone, such as carrying a score forward. Chosen per window, deterministically.
    text_only_fraction: float = 0.0
    #: What the loss covers in those windows: "all" reply tokens, or only "numbers" (the score skill
    #: without teaching the model to guess on-screen events from the rhythm of the text).
    text_only_labels: str = "all"
    #: Largest shift, in whole seconds, added to a window's `Time=a-bs` labels (not to the frames it
    #: reads): half the windows keep their own times, the others are shifted by a draw in
    #: [0, time_shift_max], so a model trained on short videos has seen the time stamps of hours-long
    #: streams. 0: off (the labels are the video's own times).
    time_shift_max: int = 0
    #: Auxiliary objectives (`train.auxiliary`): each sample gets `sample[o.key] =
    #: o.sample_targets(ids, tokenizer)`, (rows, n), for each of them.
    targets: tuple = ()
    #: Attention inside the window as the streaming engine has it, in place of full attention: each
    #: round sees only what the streaming policy keeps while it is that round's turn (older rounds'
    #: frames and turn shells gone, their commentary as text memory, cut to head + tail), with the K/V
    #: those older words were computed with in their own round, as the engine reuses them. Each sample
    #: gets `visible` ((n, n) bool, `streaming_visibility`).
    streaming_mask: bool = False


def render_layout(
    record: StreamRecord,
    loaded: LoadedModel,
    renderer: Renderer,
    options: RenderOptions,
    text_only: bool = False,
    time_shift: int = 0,
    features=None,
):
    """The window's layout (spans with positions) and its per-second (pixel_values, grid_thw), or with
    `features` (`train.features.VisionFeatures`) its per-second (vision features, grid_thw) read from
    there. `time_shift` seconds are added to the time labels of the user turns."""
    layout, query = Layout(), record.query or None
    layout.extend(renderer.prefix(query, record.previous))
    layout.trim_memory(options.text_sink, options.text_window)
    layout.commit()
    texts = record.second_texts()
    if text_only or features is not None:
        vision, offsets = [], None
        if not text_only:
            embeds, grid = features.window(record.video_path(), record.video_start, len(texts))
            offsets = loaded.family.vision_offsets(loaded.config, grid, options.fps)
            vision = [(e, grid) for e in embeds]
        for k, text in enumerate(texts):
            start = record.video_start + k + time_shift
            layout.extend(renderer.round(k, start, start + 1, offsets, query if k == 0 else None))
            layout.extend(renderer.reply(k, text))
        return layout, vision
    source = video_pixels(
        record.video_path(), loaded.processor, options.fps, record.video_start, record.seconds
    )
    vision = []
    try:
        for k, ((chunk, pixels, grid), text) in enumerate(zip(source, texts, strict=False)):
            offsets = loaded.family.vision_offsets(loaded.config, grid, options.fps)
            start, end = chunk.start + time_shift, chunk.end + time_shift
            layout.extend(renderer.round(k, start, end, offsets, query if k == 0 else None))
            layout.extend(renderer.reply(k, text))
            vision.append((pixels, grid))
    except DataError:
        raise
    except Exception as exc:  # SourceError and friends: name the sample
        raise DataError(f"{record.where}: {exc}") from exc
    return layout, vision


def video_pixels(video: Path, processor, fps: int, start: float = 0.0, seconds: int | None = None):
    """Per whole second of `video` from `start` (`seconds` of them, or to its end): (chunk,
    pixel_values, grid_thw), every second at the size the processor picks for the first. What a
    window's frames become, here and in the stored vision features (`train.features`)."""
    size = None
    for chunk in VideoFileSource(video, fps=fps, start=start, seconds=seconds):
        if size is None:
            size = processor.target_size(chunk.frames.shape[1], chunk.frames.shape[2])
        yield chunk, *processor(chunk.frames, size=size)


def label_mask(spans: list[Span], renderer: Renderer) -> torch.Tensor:
    """True for tokens of `spans` (a layout's, in order) the loss covers: reply content, silence
    marker and `<|im_end|>`."""
    masks = []
    for span in spans:
        if span.kind == Kind.REPLY:
            masks.append(torch.ones(span.n, dtype=torch.bool))
        elif span.kind == Kind.REPLY_CLOSE:
            end = (span.ids == renderer.im_end).nonzero()
            upto = int(end[0, 0]) + 1 if len(end) else span.n
            masks.append(torch.arange(span.n) < upto)
        else:
            masks.append(torch.zeros(span.n, dtype=torch.bool))
    return torch.cat(masks)


def loss_weights(mask: torch.Tensor, is_number: torch.Tensor, number_weight: float) -> torch.Tensor:
    """Per token: 0 off the labels (`mask`), `number_weight` on labelled numbers, 1 on the rest."""
    weights = mask.float()
    weights[mask & is_number] = number_weight
    return weights


def render_sample(
    record: StreamRecord,
    loaded: LoadedModel,
    renderer: Renderer,
    options: RenderOptions,
    text_only: bool = False,
    time_shift: int = 0,
    features=None,
) -> dict:
    """A window as the model is trained on it; with `features`, its frames come as vision features
    (`video_embeds`, the tower's output) instead of `pixel_values_videos`."""
    layout, vision = render_layout(record, loaded, renderer, options, text_only, time_shift, features)
    ids = layout.token_ids()
    mask = label_mask(layout.spans, renderer)
    is_number = number_tokens(loaded.tokenizer)[ids]
    if text_only and options.text_only_labels == "numbers":
        mask &= is_number
    weights = loss_weights(mask, is_number, options.number_loss_weight)
    sample = {
        "input_ids": ids,
        "position_ids": layout.positions(),
        "labels": torch.where(mask, ids, IGNORE),
        "loss_weights": weights,
        VISION_KEYS[features is not None]: torch.cat([p for p, _ in vision]) if vision else None,
        "video_grid_thw": torch.stack([g for _, g in vision]) if vision else None,
    }
    if options.streaming_mask:
        policy = StreamingPolicy(**vars(options.windows()))
        sample["visible"] = streaming_visibility(layout, policy)
    for objective in options.targets:
        sample[objective.key] = objective.sample_targets(ids, loaded.tokenizer)
    return sample


def streaming_visibility(layout: Layout, policy: StreamingPolicy) -> torch.Tensor:
    """(n, n) bool, True where token i may attend to token j: causal, and a token of round r sees only
    the tokens `policy` still keeps once round r has started (`retire(r)`, replayed on a copy of the
    layout whose cache rows are the token indices). Positions are not touched: the window's own, as
    with "append" positions, so that one forward pass gives every round its view."""
    n = len(layout)
    copy, start = Layout(contiguous=False), 0
    for span in layout.spans:
        twin = Span(span.kind, span.ids, span.round, span.rel)
        twin.pos, twin.rows = span.pos, torch.arange(start, start + span.n)
        copy.spans.append(twin)
        start += span.n
    round_of = torch.cat([torch.full((s.n,), s.round) for s in layout.spans])
    visible = torch.ones(n, n, dtype=torch.bool).tril()
    for r in layout.rounds():
        policy.retire(copy, r)
        kept = torch.zeros(n, dtype=torch.bool)
        kept[torch.cat([s.rows for s in copy.spans])] = True
        visible[round_of == r] &= kept
    return visible


#: Per tokenizer, held weakly: keyed by `id()`, a table outlived its tokenizer and was handed to the
#: next tokenizer that got the same address (a smaller vocabulary: an IndexError in training).
_NUMBERS: "weakref.WeakKeyDictionary[object, torch.Tensor]" = weakref.WeakKeyDictionary()


def number_tokens(tokenizer) -> torch.Tensor:
    """Bool over the vocabulary: tokens that are a number, as digits or as an English word up to twenty
    (maybe with a leading space)."""
    if tokenizer not in _NUMBERS:
        vocab = tokenizer.get_vocab()
        table = torch.zeros(max(vocab.values()) + 1, dtype=torch.bool)
        for token_id in vocab.values():
            text = tokenizer.decode([token_id]).strip()
            table[token_id] = bool(text) and (text.isdigit() or text.lower() in NUMBER_WORDS)
        _NUMBERS[tokenizer] = table
    return _NUMBERS[tokenizer]


class StreamDataset(torch.utils.data.Dataset):
    """Windows from annotation files (chunked with `make-chunks`), rendered on the fly.

    At construction every record is checked (video present, window inside the video): a bad one
    raises `DataError`, or with `skip_bad` is left out, counted in `self.skipped` and logged. The
    windows of `text_paths` are always rendered without frames: their videos are never opened.
    After `use_features`, frames come as the vision tower's stored output instead of from the videos.
    """

    def __init__(
        self,
        annotation_paths,
        loaded: LoadedModel,
        options: RenderOptions,
        skip_bad: bool = False,
        text_paths=(),
        worker_nice: int = 0,
    ):
        self.loaded, self.options = loaded, options
        self.worker_nice = worker_nice  # applied once in each DataLoader worker process, not here
        self.renderer = Renderer(
            loaded.tokenizer,
            **({"system_prompt": options.system_prompt} if options.system_prompt is not None else {}),
            query_turn=query_turn(loaded),
        )
        self.handles: list[tuple[Path, int, bool]] = []  # (file, offset, always text-only)
        self.skipped: list[str] = []
        self.features = None  # `use_features`
        self.off_second: list[str] = []  # windows with frames that start between two whole seconds
        durations: dict[Path, float | None] = {}
        sources = [(Path(p), False) for p in annotation_paths] + [(Path(p), True) for p in text_paths]
        for path, text_only in sources:
            for offset in read_seeks(path):
                try:
                    record = read_line(path, offset)
                    if not text_only:
                        self._check_video(record, durations)
                        if abs(record.video_start - round(record.video_start)) > 1e-6:
                            self.off_second.append(record.where)
                except Exception as exc:
                    if not skip_bad:
                        raise (
                            exc if isinstance(exc, DataError) else DataError(f"{path}@{offset}: {exc}")
                        ) from exc
                    self.skipped.append(str(exc))
                    continue
                self.handles.append((path, offset, text_only))
        if self.skipped:
            log.warning("skipped %d bad samples; first: %s", len(self.skipped), self.skipped[0])
        if not self.handles:
            names = [str(p) for p, _ in sources]
            raise DataError(f"no usable samples in {', '.join(names)}")
        self.videos = sorted(durations)  # the videos whose frames the windows show

    def use_features(self, features) -> None:
        """From now on, read every window's frames as stored vision features (`train.features`,
        which hold whole seconds: every window with frames must start on one)."""
        if self.off_second:
            more = f" (and {len(self.off_second) - 1} more)" if len(self.off_second) > 1 else ""
            raise DataError(
                f"vision features need windows that start on a whole second: {self.off_second[0]}{more}"
            )
        self.features = features

    @staticmethod
    def _check_video(record: StreamRecord, durations: dict[Path, float | None]) -> None:
        video = record.video_path()
        if video not in durations:
            durations[video] = VideoFileSource(video).duration
        duration = durations[video]
        if duration is not None and record.video_end > duration + 1e-3:
            raise DataError(
                f"{record.where}: window ends at {record.video_end:.1f} s, "
                f"past the end of {video} ({duration:.1f} s)"
            )

    def __len__(self) -> int:
        return len(self.handles)

    def __getitem__(self, index: int) -> dict:
        if self.worker_nice and torch.utils.data.get_worker_info() is not None:
            if hasattr(os, "nice"):  # (not on Windows)
                os.nice(self.worker_nice)  # the worker's own copy of the dataset: once per process
            self.worker_nice = 0
        path, offset, always_text = self.handles[index]
        text_only, time_shift = window_draws(index, self.options)
        record = read_line(path, offset)
        text_only = text_only or always_text
        return render_sample(
            record, self.loaded, self.renderer, self.options, text_only, time_shift, self.features
        )


def window_draws(index: int, options: RenderOptions) -> tuple[bool, int]:
    """Per-window choices, the same for a window index in every epoch and every process: shown
    without frames, and the shift of its time labels."""
    rng = random.Random(index)
    text_only = rng.random() < options.text_only_fraction
    shifted = options.time_shift_max > 0 and rng.random() < 0.5
    return text_only, rng.randint(0, options.time_shift_max) if shifted else 0


def collate(samples: list[dict], pad_id: int) -> dict:
    """Right-pad a batch; vision inputs are concatenated in sample order."""
    length = max(s["input_ids"].numel() for s in samples)
    batch = len(samples)
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    labels = torch.full((batch, length), IGNORE, dtype=torch.long)
    weights = torch.zeros(batch, length)
    attention = torch.zeros(batch, length, dtype=torch.long)
    positions = torch.zeros(3, batch, length, dtype=torch.long)
    for i, s in enumerate(samples):
        n = s["input_ids"].numel()
        input_ids[i, :n] = s["input_ids"]
        labels[i, :n] = s["labels"]
        weights[i, :n] = s["loss_weights"]
        attention[i, :n] = 1
        positions[:, i, :n] = s["position_ids"]
    batch = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "position_ids": positions,
        "labels": labels,
        "loss_weights": weights,
    }
    if "visible" in samples[0]:  # a 4-D mask; a padding token sees itself only (no empty softmax row)
        mask = torch.eye(length, dtype=torch.bool).repeat(len(samples), 1, 1, 1)
        for i, s in enumerate(samples):
            n = s["visible"].shape[0]
            mask[i, 0, :n, :n] = s["visible"]
        batch["attention_mask"] = mask
    for key in samples[0].keys() - SAMPLE_KEYS:  # auxiliary targets (rows, n): padded with -1
        targets = torch.full((len(samples), len(samples[0][key]), length), -1, dtype=samples[0][key].dtype)
        for i, s in enumerate(samples):
            targets[i, :, : s[key].shape[1]] = s[key]
        batch[key] = targets
    vision = [s for s in samples if s["video_grid_thw"] is not None]
    if vision:  # text-only samples contribute no frames
        for key in VISION_KEYS:
            if key in vision[0]:
                batch[key] = torch.cat([s[key] for s in vision])
        batch["video_grid_thw"] = torch.cat([s["video_grid_thw"] for s in vision])
    return batch
