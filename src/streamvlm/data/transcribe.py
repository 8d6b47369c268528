"""Your own videos, their speech transcribed -> Inf-Stream-Train annotations (`streamvlm data transcribe`).

Each video's first audio stream is read with PyAV, resampled to 16 kHz mono, and transcribed by a
Whisper checkpoint through transformers' speech-recognition pipeline with word timestamps: the
audio goes in blocks of `block_s` seconds (memory stays bounded, the progress bar moves), each cut
by the pipeline into 30 s windows that overlap by 5 s on each side and are merged where they
overlap. Word times come from the cross-attention of the checkpoint's `alignment_heads`, aligned
to the audio by dynamic time warping (transformers' `return_timestamps="word"`); they are then
kept in order (a word starts no earlier than the one before it ends) and within the video.

Resumable per video: each finished video's words go to `<out>/.transcripts/<stem>-<hash>.json`
(written under a temporary name, then moved), and a re-run with the same model and language takes
them from there while the video file is unchanged (size and modification time): a killed run
loses at most the video in progress. The annotations are written like `from-subtitles` writes
them (one record per video, temporary name, then moved); unusable videos are skipped and counted
by reason, or stop the run with `strict`.
"""

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..errors import StreamvlmError
from .formats import Word
from .subtitles import Skip, Summary, video_duration, video_stream_record, write_records

RATE = 16000  # Whisper's sampling rate
DEFAULT_ASR = "openai/whisper-large-v3-turbo"


@dataclass
class TranscribeSummary(Summary):
    transcribed: int = 0  # videos run through the model this time
    resumed: int = 0  # videos whose words came from <out>/.transcripts

    def to_dict(self) -> dict:
        return {**super().to_dict(), "transcribed": self.transcribed, "resumed": self.resumed}


# -- audio -----------------------------------------------------------------------------------
def check_audio(video: Path) -> None:
    with av.open(str(video)) as container:
        if not container.streams.audio:
            raise Skip("no audio stream", f"{video}: has no audio stream (nothing to transcribe)")


def audio_blocks(video: Path, block_s: float):
    """(offset seconds, float32 16 kHz mono samples) blocks of `video`'s first audio stream, the
    offset counted from the start of its video stream."""
    with av.open(str(video)) as container:
        stream = container.streams.audio[0]
        shown = container.streams.video[0] if container.streams.video else stream
        zero = float(shown.start_time * shown.time_base) if shown.start_time is not None else 0.0
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        size, pieces, held, start = int(block_s * RATE), [], 0, None
        try:
            for frame in itertools.chain(container.decode(stream), [None]):  # None flushes the resampler
                if start is None and frame is not None:
                    start = max(0.0, frame.time - zero) if frame.time is not None else 0.0
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().reshape(-1))
                    held += pieces[-1].size
                while held >= size:
                    samples = np.concatenate(pieces)
                    yield start, samples[:size]
                    pieces, held, start = [samples[size:]], held - size, start + block_s
        except av.error.FFmpegError as exc:
            raise Skip("audio unreadable", f"{video}: its audio cannot be decoded ({exc})") from None
        if held:
            yield start or 0.0, np.concatenate(pieces)


# -- the model -------------------------------------------------------------------------------
def load_asr(model: str, device: str | None = None, batch_size: int = 8):
    """transformers' speech-recognition pipeline around a Whisper checkpoint (a folder or hub id)."""
    import torch
    from transformers import pipeline

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    try:
        asr = pipeline(
            "automatic-speech-recognition",
            model=model,
            device=device,
            dtype=dtype,
            chunk_length_s=30,
            batch_size=batch_size,
            ignore_warning=True,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise StreamvlmError(f"--asr {model}: cannot load a speech-recognition model ({exc})") from None
    if asr.type != "seq2seq_whisper":
        raise StreamvlmError(f"--asr {model}: not a Whisper checkpoint (word timestamps need Whisper)")
    if not getattr(asr.model.generation_config, "alignment_heads", None):
        raise StreamvlmError(
            f"--asr {model}: its generation_config.json has no alignment_heads (needed for word timestamps)"
        )
    return asr


def transcribe_block(asr, samples: np.ndarray, language: str | None) -> list[tuple[float, float | None, str]]:
    """Words of one block, times from its start."""
    options = {"task": "transcribe", **({"language": language} if language else {})}
    out = asr({"raw": samples, "sampling_rate": RATE}, return_timestamps="word", generate_kwargs=options)
    return [(c["timestamp"][0], c["timestamp"][1], c["text"]) for c in out["chunks"]]


def in_order(words, duration: float) -> list[Word]:
    """Words with their text stripped (empty ones dropped), each starting no earlier than the one
    before it ends, ending no earlier than it starts, and within [0, duration]."""
    kept, last = [], 0.0
    for start, end, text in words:
        text = text.strip()
        start = max(start or 0.0, last)
        if not text or start >= duration:
            continue
        end = min(max(end if end is not None else start, start), duration)
        kept.append((round(start, 3), round(end, 3), text))
        last = end
    return kept


# -- resuming --------------------------------------------------------------------------------
def transcript_path(video: Path, out_dir: Path) -> Path:
    digest = hashlib.sha1(str(video.resolve()).encode()).hexdigest()[:10]
    return out_dir / ".transcripts" / f"{video.stem}-{digest}.json"


def identity(video: Path, asr: str, language: str | None) -> dict:
    stat = video.stat()
    return {
        "video": str(video.resolve()),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "asr": asr,
        "language": language,
    }


def load_transcript(video: Path, out_dir: Path, asr: str, language: str | None) -> dict | None:
    """The saved transcript of this video by this model, if the video has not changed since."""
    path = transcript_path(video, out_dir)
    if not video.is_file() or not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # damaged: transcribe again
    same = all(saved.get(k) == v for k, v in identity(video, asr, language).items())
    return saved if same else None


def save_transcript(video: Path, out_dir: Path, asr: str, language: str | None, duration, words) -> None:
    path = transcript_path(video, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".partial")
    data = {**identity(video, asr, language), "duration": duration, "words": [list(w) for w in words]}
    temp.write_text(json.dumps(data, ensure_ascii=False))
    os.replace(temp, path)


# -- the command -----------------------------------------------------------------------------
def transcribe(
    videos: list[Path],
    out_dir: Path,
    asr: str = DEFAULT_ASR,
    language: str | None = None,
    strict: bool = False,
    device: str | None = None,
    batch_size: int = 8,
    block_s: float = 600.0,
    progress: bool = True,
) -> TranscribeSummary:
    """Write `out_dir/annotations.jsonl` (+ seeks) for `videos`; returns what was done. The model is
    loaded only when a video needs it (not when every transcript is already saved)."""
    from tqdm import tqdm

    summary, records, pipe = TranscribeSummary(), [], None
    for video in tqdm(videos, desc="videos", unit="video", disable=not progress):
        try:
            saved = load_transcript(video, out_dir, asr, language)
            if saved is not None:
                summary.resumed += 1
            else:
                duration = video_duration(video)
                check_audio(video)
                pipe = load_asr(asr, device, batch_size) if pipe is None else pipe
                words = []
                with tqdm(
                    total=round(duration), desc=video.name, unit="s", leave=False, disable=not progress
                ) as bar:
                    for offset, samples in audio_blocks(video, block_s):
                        words += [
                            (a + offset, b if b is None else b + offset, w)
                            for a, b, w in transcribe_block(pipe, samples, language)
                        ]
                        bar.update(min(round(samples.size / RATE), bar.total - bar.n))
                words = in_order(words, duration)
                save_transcript(video, out_dir, asr, language, round(duration, 3), words)
                saved = {"duration": round(duration, 3), "words": words}
                summary.transcribed += 1
            if not saved["words"]:
                raise Skip("no words", f"{video}: no speech found")
        except Skip as exc:
            if strict:
                raise
            summary.skip(exc)
            continue
        words = [(float(a), float(b), str(w)) for a, b, w in saved["words"]]
        records.append(video_stream_record(video, out_dir, saved["duration"], words))
        summary.add(records[-1])
    write_records(records, summary, out_dir)
    return summary


# -- a tiny random Whisper, for tests --------------------------------------------------------
def write_tiny_whisper(path: str | Path, seed: int = 0, max_tokens: int = 24) -> Path:
    """A random-weight Whisper checkpoint with the real one's layout (80 mel bins, 30 s windows,
    Whisper's special and timestamp tokens, a generation config with alignment heads), a small
    byte-level BPE trained here, 1 layer of width 32: it transcribes nonsense, quickly, offline."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    path = Path(path)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    corpus = ["red serves long and blue returns it", "what a shot! the crowd cheers, red scores"]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=120, show_progress=False))
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tokenizer = WhisperTokenizer(vocab=trained["vocab"], merges=merges, pad_token="<|endoftext|>")
    specials = [
        "<|startoftranscript|>",
        "<|en|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])  # right after <|notimestamps|>
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ["<|endoftext|>", *specials]}
    eos = ids["<|endoftext|>"]
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=eos,
        bos_token_id=eos,
        eos_token_id=eos,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        alignment_heads=[[0, 0], [0, 1]],
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        lang_to_id={"<|en|>": ids["<|en|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        is_multilingual=True,
        max_length=max_tokens,
        num_beams=1,
        begin_suppress_tokens=[eos],
    )
    model.save_pretrained(path)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(path)
    return path
