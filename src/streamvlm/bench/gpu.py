"""`streamvlm bench --suite gpu`: the one-shot GPU benchmark (issue 28, item 4; `benchmarks/gpu.sh`).

On one GPU, random weights at Qwen2.5-VL-7B's exact shape, unattended, no downloads, and within a
global wall-clock budget (default 450 s, so the whole run is under 8 minutes), it measures:

  decode      ms per decoded token, eager vs compiled (`StreamConfig(compile=True)` where the
              engine has it; "not available" otherwise), same stream at 2 fps, after a warm-up
  step_2fps   the per-second step at 2 fps, 1280x720 frames (720 vision tokens per second at the
              streaming pixel budget), streaming policy: the decode phase's session in the faster
              mode goes on (no second compilation) past the vision window's fill
  fps_sweep   the highest input fps that stays real time: p99 of step + frame wait <= 1 s per
              stream second after a warm-up second, fps 2/4/8/16/24/32, stopped at the first fps
              that fails (compiled only where a compilation per fps fits the share)
  memory      peak device memory (`torch.cuda.max_memory_allocated`) per phase and sweep point
  policies    streaming vs full vs recompute at 2 fps, stepped in lockstep so all reach the same
              stream time (recompute, flat once its window is full, stops after 30 s); ratios
              over the seconds every policy reached

Budget: the clock starts when the bench command starts (model building included). Each phase, when
it starts, gets its share of the time left among the phases still to run (`SHARES`: what an earlier
phase did not use, or took beyond its share, is shared out among the rest); before
every stream second the loop checks that the last second's time still fits before the phase's
deadline, so a phase ends early rather than late, and the last phase ends at the global deadline.
JSON, markdown and plot are rewritten after every phase (and sweep point, and 10 s of policies),
the JSON atomically, so a kill loses little. A watchdog thread ends the process (exit status 124)
shortly after the budget if something cannot be interrupted (a compilation, one huge step), after
marking the JSON as stopped; SIGTERM ends the budget at once (saved, exit status 3).

Frames come from a short generated H.264 clip, decoded (and resized to the model's input size) in
a worker thread (`sources.prefetch.Prefetch`) while the engine steps: `wait_ms` per second is how
long the step loop waited for its frames.
"""

import collections
import contextlib
import gc
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import psutil
import torch

from ..cache.policy import Windows
from ..config import StreamConfig
from ..engine import StreamingSession
from ..sources.base import Chunk
from ..sources.prefetch import Prefetch
from .run import RECORDED, load, machine

PHASES = ("decode", "step_2fps", "fps_sweep", "memory", "policies")
TIMED = ("decode", "step_2fps", "fps_sweep", "policies")  # the phases with a share, in their order
#: shares of the time left after setup; "memory" is measured along the others and takes none
SHARES = {"decode": 0.30, "step_2fps": 0.10, "fps_sweep": 0.30, "policies": 0.30}
REAL_TIME_MS = 1000.0  # one second of stream per second of wall time


@dataclass
class GpuBenchConfig(Windows):
    """The one-shot GPU benchmark; the cache windows are inherited from `cache.policy.Windows`."""

    out: str = "out/gpu"  # directory: gpu.json, gpu.md, gpu.png
    device: str = "cuda"
    dtype: str | None = None  # default bfloat16 on cuda, float32 on cpu
    budget_s: float = 450.0
    dry_run: bool = False
    shape: str = "7b"
    model: str | None = None
    text_layers: int | None = None
    vision_layers: int | None = None
    size: tuple[int, int] = (1280, 720)  # width, height: 720 vision tokens per second at 2 fps
    new_tokens: int = 20  # tokens generated every second (end of turn never chosen)
    warmup_seconds: int = 3  # decode phase: steps not timed (compilation, allocator)
    decode_seconds: int = 12  # decode phase: timed steps per mode
    step_seconds: int = 40  # per-second step at 2 fps
    sweep: tuple[int, ...] = (2, 4, 8, 16, 24, 32)
    sweep_seconds: int = 20  # stream seconds per sweep point (the first is a warm-up)
    policies: tuple[str, ...] = ("streaming", "full", "recompute")
    policy_minutes: float = 3.0
    #: recompute's step is the same every second once the vision window is full: it stops after this
    #: many seconds and the time goes to the other policies (None: it runs as long as they do)
    recompute_seconds: int | None = 30
    prefetch_depth: int = 2
    encode_ahead: bool = True  # the next second's vision encoded while this one decodes (side CUDA stream)
    clip_seconds: int = 2  # the generated clip, looped
    watchdog_grace_s: float | None = None  # after the budget; default min(15, max(5, 5 %)); 0: none
    shares: dict = field(default_factory=lambda: dict(SHARES))  # of the time left after setup
    phases: tuple[str, ...] = TIMED  # a rerun of some only: the others' shares go to them
    seed: int = 0

    @classmethod
    def dry(cls, **overrides) -> "GpuBenchConfig":
        """Tiny model, tiny frames, a few seconds per phase: the whole suite on a CPU in well under 60 s."""
        base = cls(
            device="cpu",
            budget_s=30.0,
            dry_run=True,
            shape="tiny",
            size=(112, 112),
            new_tokens=4,
            warmup_seconds=1,
            decode_seconds=2,
            step_seconds=3,
            sweep_seconds=3,
            policy_minutes=0.05,
            recompute_seconds=2,
            vision_window=2,
            text_rounds=2,
            text_sink=8,
            text_window=24,
            clip_seconds=1,
            # a CPU compiles the tiny decode step in seconds (inductor's C++): give the decode phase more
            shares={"decode": 0.4, "step_2fps": 0.1, "fps_sweep": 0.25, "policies": 0.25},
        )
        return replace(base, **overrides)

    @property
    def resolved_dtype(self) -> str:
        return self.dtype or ("bfloat16" if self.device.startswith("cuda") else "float32")


def compile_available() -> bool:
    """Whether this engine's `StreamConfig` has the compiled decode path (`compile`)."""
    return "compile" in {f.name for f in fields(StreamConfig)}


# -- timing helpers ---------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _percentile(values, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _median(values) -> float | None:
    return float(np.median(values)) if len(values) else None


# -- frames -----------------------------------------------------------------------------------
def write_clip(config: GpuBenchConfig, directory: Path) -> Path:
    """A short generated H.264 clip at the sweep's highest fps (so every fps samples real frames)."""
    from ..sources import synthetic_frames, write_video

    width, height = config.size
    fps = max(max(config.sweep, default=2), 2)
    frames = synthetic_frames(config.clip_seconds, fps, (height, width), seed=config.seed)
    return write_video(directory / f"clip-{width}x{height}-{fps}fps.mp4", frames, fps=fps)


def looped_clip(path: Path, fps: int, seconds: int, clip_seconds: int, start: int = 0):
    """`seconds` one-second chunks at `fps` (stream times from `start`), decoding the clip again from
    its beginning whenever it ends."""
    from ..sources import VideoFileSource

    t = 0
    while t < seconds:
        n = min(clip_seconds, seconds - t)
        for chunk in VideoFileSource(path, fps=fps, seconds=n):
            yield Chunk(float(start + t), float(start + t + 1), chunk.frames)
            t += 1


def frames_source(
    loaded, config: GpuBenchConfig, clip: Path, fps: int, seconds: int, start: int = 0
) -> Prefetch:
    """The clip decoded and resized to the model's input size in a worker thread.

    The engine keeps the frames' own size when it is already its target size, so its step does the
    rest (patchify, normalise, vision encoder, prefill, decoding) and nothing of the decoding."""
    processor = loaded.processor
    height, width = processor.target_size(config.size[1], config.size[0])

    def resize(chunk: Chunk) -> Chunk:
        frames = processor.resize_frames(chunk.frames, height, width).permute(0, 2, 3, 1).numpy()
        return Chunk(chunk.start, chunk.end, np.ascontiguousarray(frames))

    source = looped_clip(clip, fps, seconds, config.clip_seconds, start)
    return Prefetch(source, depth=config.prefetch_depth, transform=resize, name=f"frames-{fps}fps")


# -- the suite --------------------------------------------------------------------------------
class GpuBench:
    #: how the watchdog ends the process (tests replace it)
    exit = staticmethod(os._exit)

    def __init__(self, config: GpuBenchConfig, command: str | None = None, quiet: bool = False):
        self.config = config
        self.command = command
        self.quiet = quiet
        self.out = Path(config.out)
        self.started = time.monotonic()
        self.deadline = self.started + config.budget_s
        self.lock = threading.Lock()
        self.device = torch.device(config.device)
        self.loaded = None
        self.clip: Path | None = None
        self.best_mode = "eager"
        self.compile_cost_s = 0.0
        #: the latest stream seconds' wall times: their median predicts a new loop's first second
        #: (a median, so that one compiling step does not starve the phases after it)
        self.recent_steps: collections.deque = collections.deque([0.0], maxlen=3)
        self.sessions: dict[str, StreamingSession] = {}
        self.watchdogs: list[threading.Timer] = []
        self.interrupted: str | None = None  # SIGTERM
        self.report: dict = {
            "suite": "gpu",
            "version": 1,
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "config": {**asdict(config), "size": list(config.size), "dtype": config.resolved_dtype},
            "machine": None,
            "model": None,
            "budget": {"budget_s": config.budget_s, "elapsed_s": 0.0, "phase_deadlines_s": {}},
            "setup": {},
            "phases": {name: {"status": "not run"} for name in PHASES},
            "complete": False,
            "stopped": None,
        }

    # -- clock --------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self, deadline: float) -> float:
        return min(deadline, self.deadline) - time.monotonic()

    def log(self, message: str) -> None:
        if not self.quiet:
            print(f"[gpu bench {self.elapsed():6.1f} s] {message}", file=sys.stderr, flush=True)

    # -- output -------------------------------------------------------------------------------
    @property
    def paths(self) -> dict[str, Path]:
        return {"json": self.out / "gpu.json", "markdown": self.out / "gpu.md", "plot": self.out / "gpu.png"}

    def save(self, plot: bool = True) -> None:
        """JSON (atomically), markdown and plot of everything measured so far."""
        from .gpu_report import markdown, plot_gpu

        with self.lock:
            self.report["budget"]["elapsed_s"] = self.elapsed()
            self.out.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.report, indent=1, default=str) + "\n"
            _atomic_write(self.paths["json"], text)
            _atomic_write(self.paths["markdown"], markdown(self.report))
        if plot:
            try:
                plot_gpu(self.report, self.paths["plot"])
            except Exception as exc:  # noqa: BLE001 - a plot must never cost the figures
                self.report.setdefault("warnings", []).append(f"plot: {type(exc).__name__}: {exc}")

    # -- sessions -----------------------------------------------------------------------------
    def stream_config(self, policy: str = "streaming", fps: int = 2, mode: str = "eager") -> StreamConfig:
        c = self.config
        extra = {"compile": True} if mode == "compiled" else {}
        return StreamConfig(
            fps=fps,
            policy=policy,
            **vars(c.windows()),
            max_new_tokens=c.new_tokens,
            greedy=True,
            repetition_penalty=1.0,
            ignore_eos=True,
            **extra,
        )

    def ahead_of(self, chunk):
        """The next second's frames for `step(..., ahead=)` (its vision encoded while this second
        decodes, on a side CUDA stream), unless `encode_ahead` is off."""
        return chunk.frames if chunk is not None and self.config.encode_ahead else None

    def typical_step_s(self) -> float:
        return statistics.median(self.recent_steps)

    def stream(
        self, session, fps: int, seconds: int, deadline: float, stop_rule=None, expect_s: float | None = None
    ) -> tuple[list, str | None]:
        """Step `session` through the next `seconds` of the clip at `fps`; rows of per-second statistics.

        Stops before a second whose step would end after `deadline` (judged by the last step; the
        first by `expect_s`, e.g. a compilation, and by the last step any loop took), on
        out-of-memory, or when `stop_rule(rows)` gives a reason."""
        rows: list[dict] = []
        stopped = None
        last_s = self.typical_step_s() if expect_s is None else max(expect_s, self.typical_step_s())
        start = session.round  # (one round per second: a session continued goes on where it was)
        with frames_source(self.loaded, self.config, self.clip, fps, seconds, start) as source:
            chunks = iter(source)
            following = next(chunks, None)  # (the next second, for its vision encoding ahead)
            for _ in range(seconds):
                if time.monotonic() + last_s > min(deadline, self.deadline):
                    stopped = "time budget"
                    break
                began = time.monotonic()
                chunk, following = following, next(chunks, None)
                if chunk is None:
                    stopped = "source ended"
                    break
                wait_ms = 1000 * (time.monotonic() - began)
                try:
                    line = session.step(chunk.frames, chunk.start, chunk.end, ahead=self.ahead_of(following))
                except torch.OutOfMemoryError:
                    stopped = f"out of memory at {chunk.start:.0f} s"
                    break
                _sync(self.device)
                stats = line.stats.to_dict()
                rows.append(
                    {**{k: stats[k] for k in RECORDED}, "new_tokens": stats["new_tokens"], "wait_ms": wait_ms}
                )
                last_s = time.monotonic() - began
                self.recent_steps.append(last_s)
                if stop_rule is not None and (why := stop_rule(rows)):
                    stopped = why
                    break
        return rows, stopped

    def stream_lockstep(
        self, sessions: dict, fps: int, seconds: int, deadline: float, limits: dict | None = None
    ) -> tuple[dict[str, list], dict[str, str | None]]:
        """Every session steps through the same second of frames in turn, second after second, so all
        policies reach the same stream time (and share the machine's state) when the deadline comes.
        A session that runs out of memory, or reaches its number of seconds in `limits`, is dropped
        (from `sessions` too); the others go on."""
        series: dict[str, list] = {name: [] for name in sessions}
        stopped: dict[str, str | None] = dict.fromkeys(sessions)
        live = dict(sessions)
        last_s = self.typical_step_s() * len(sessions)  # (a recent step, each session's first)
        with frames_source(self.loaded, self.config, self.clip, fps, seconds) as source:
            chunks = iter(source)
            following = next(chunks, None)
            for _ in range(seconds):
                if time.monotonic() + last_s > min(deadline, self.deadline):
                    for name in live:
                        stopped[name] = "time budget"
                    break
                began = time.monotonic()
                chunk, following = following, next(chunks, None)
                if chunk is None:
                    break
                wait_ms = 1000 * (time.monotonic() - began)
                for name, session in list(live.items()):
                    try:
                        ahead = self.ahead_of(following)
                        line = session.step(chunk.frames, chunk.start, chunk.end, ahead=ahead)
                    except torch.OutOfMemoryError:
                        stopped[name] = f"out of memory at {chunk.start:.0f} s"
                        del live[name]
                        sessions.pop(name, None)  # (the caller's reference too: its memory goes now)
                        session = None
                        _free(self.device)
                        continue
                    stats = line.stats.to_dict()
                    series[name].append(
                        {
                            **{k: stats[k] for k in RECORDED},
                            "new_tokens": stats["new_tokens"],
                            "wait_ms": wait_ms,
                        }
                    )
                    if len(series[name]) >= (limits or {}).get(name, seconds + 1):
                        stopped[name] = (
                            f"its {len(series[name])} s (the step is flat once the window is full)"
                        )
                        del live[name]
                        sessions.pop(name, None)
                        session = None
                _sync(self.device)
                last_s = time.monotonic() - began
                if not live:
                    break
                if max(len(rows) for rows in series.values()) % 10 == 0:  # a kill loses at most 10 s
                    self.report["phases"]["policies"] = {
                        "status": "running",
                        "series": series,
                        "stopped": stopped,
                    }
                    self.save(plot=False)
        return series, stopped

    def tokens_per_second(self, fps: int) -> int:
        width, height = self.config.size
        return self.loaded.processor.tokens_per_chunk(height, width, fps)

    # -- run ----------------------------------------------------------------------------------
    def run(self) -> dict:
        self.start_watchdog()
        previous = self.install_sigterm()
        try:
            self.setup()
            self.save()
            asked = [name for name in TIMED if name in self.config.phases]
            shares = {name: self.config.shares.get(name, SHARES[name]) for name in asked}
            deadlines = {}
            for name, phase in (
                ("decode", self.phase_decode),
                ("step_2fps", self.phase_step),
                ("fps_sweep", self.phase_sweep),
                ("policies", self.phase_policies),
            ):
                if name not in asked:
                    self.report["phases"][name] = {"status": "skipped: not asked"}
                    continue
                # its share of the time left now, among the phases still to run: what an earlier
                # phase left unused, or took beyond its share (a slow compilation), is shared out
                ahead = asked[asked.index(name) :]
                portion = shares[name] / (sum(shares[n] for n in ahead) or 1.0)
                now = time.monotonic()
                last = name == asked[-1]
                deadlines[name] = self.deadline if last else now + portion * (self.deadline - now)
                self.report["budget"]["phase_deadlines_s"][name] = deadlines[name] - self.started
                if self.left(deadlines[name]) <= 0:
                    self.report["phases"][name] = {"status": "skipped: time budget"}
                    self.log(f"{name}: skipped (time budget)")
                    continue
                self.log(f"{name}: until {deadlines[name] - self.started:.0f} s")
                began = time.monotonic()
                _reset_peak(self.device)
                try:
                    result = phase(deadlines[name])
                except torch.OutOfMemoryError as exc:
                    result = {
                        **self.report["phases"].get(name, {}),
                        "status": f"error: out of memory ({str(exc).splitlines()[0][:200]})",
                    }
                except Exception as exc:  # noqa: BLE001 - unattended: one phase's failure is not the run's
                    import traceback

                    result = {  # what the phase saved before the error (sweep points, series) is kept
                        **self.report["phases"].get(name, {}),
                        "status": f"error: {type(exc).__name__}: {str(exc)[:300]}",
                        "traceback": traceback.format_exc(limit=8),
                    }
                    self.log(result["status"])
                result["wall_s"] = time.monotonic() - began
                if "peak_device_mb" not in result:
                    result["peak_device_mb"] = _peak_mb(self.device)
                result["rss_mb"] = psutil.Process().memory_info().rss / 2**20
                self.report["phases"][name] = result
                self.update_memory()
                self.report["targets"] = targets(self.report)
                _free(self.device)
                self.save()
            spent = [
                n
                for n, p in self.report["phases"].items()
                if p["status"] not in ("done", "skipped: not asked") and n != "memory"
            ]
            self.report["complete"] = not spent
            if spent:
                self.report["stopped"] = "partial: " + ", ".join(
                    f"{n} {self.report['phases'][n]['status']}" for n in spent
                )
            if self.interrupted:
                self.report["stopped"] = f"interrupted ({self.interrupted}); " + (
                    self.report["stopped"] or ""
                )
        except KeyboardInterrupt:
            self.report["stopped"] = "interrupted (KeyboardInterrupt)"
            self.log(self.report["stopped"])
        finally:
            for timer in self.watchdogs:
                timer.cancel()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.update_memory()
            self.save()
        self.log(f"done: {self.paths['json']}")
        return self.report

    def start_watchdog(self, grace: float | None = None, why: str | None = None) -> threading.Timer | None:
        grace = self.config.watchdog_grace_s if grace is None else grace
        if grace is None:
            grace = min(15.0, max(5.0, 0.05 * self.config.budget_s))
        if grace <= 0:
            return None
        reason = why or f"the {self.config.budget_s:.0f} s budget"

        def fire():
            with contextlib.suppress(Exception):
                if self.lock.acquire(timeout=5):
                    try:
                        self.report["stopped"] = (
                            f"watchdog: still running {grace:.0f} s after {reason} (a step or a "
                            "compilation that cannot be interrupted); process ended"
                        )
                        self.report["budget"]["elapsed_s"] = self.elapsed()
                        text = json.dumps(self.report, indent=1, default=str) + "\n"
                        _atomic_write(self.paths["json"], text)
                        from .gpu_report import markdown

                        _atomic_write(self.paths["markdown"], markdown(self.report))
                    finally:
                        self.lock.release()
            print("[gpu bench] watchdog: budget spent, exiting", file=sys.stderr, flush=True)
            self.exit(124)

        timer = threading.Timer(max(0.0, self.deadline + grace - time.monotonic()), fire)
        timer.daemon = True
        timer.start()
        self.watchdogs.append(timer)
        return timer

    def install_sigterm(self):
        """SIGTERM ends the budget now: every loop stops before its next stream second, the run saves
        what it has and returns; a watchdog ends the process 10 s later if a step does not return.
        (Raising from the handler could land in a finaliser, where Python ignores it.)"""
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            self.interrupted = f"signal {signum}"
            self.deadline = time.monotonic()
            self.start_watchdog(grace=10.0, why=f"signal {signum}")

        return signal.signal(signal.SIGTERM, handler)

    # -- setup --------------------------------------------------------------------------------
    def setup(self) -> None:
        from .run import BenchConfig

        c = self.config
        began = time.monotonic()
        self.log(f"building {c.model or c.shape} on {c.device} ({c.resolved_dtype})")
        bench_config = BenchConfig(
            shape=c.shape,
            model=c.model,
            device=c.device,
            dtype=c.resolved_dtype,
            text_layers=c.text_layers,
            vision_layers=c.vision_layers,
            seed=c.seed,
        )
        self.loaded = load(bench_config)
        _sync(self.device)
        build_s = time.monotonic() - began
        weights_mb = torch.cuda.memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
        self.report["machine"] = machine(self.loaded.model.device)
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            self.report["machine"].update(
                device_total_mb=props.total_memory / 2**20,
                multiprocessors=props.multi_processor_count,
                capability=f"{props.major}.{props.minor}",
                cuda=torch.version.cuda,
                sdpa_flash=torch.backends.cuda.flash_sdp_enabled(),
                sdpa_mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled(),
            )
        self.report["model"] = {
            "shape": c.shape if not c.model else None,
            "parameters": sum(p.numel() for p in self.loaded.model.parameters()),
            "text_layers": self.loaded.config.text_config.num_hidden_layers,
            "vision_layers": self.loaded.config.vision_config.depth,
            "attn_implementation": getattr(self.loaded.model.config, "_attn_implementation", None),
            "vision_tokens_per_second_at_2fps": self.tokens_per_second(2),
            "weights_mb": weights_mb,
        }
        began_clip = time.monotonic()
        self._clip_dir = tempfile.TemporaryDirectory(prefix="streamvlm-gpu-bench-")
        self.clip = write_clip(c, Path(self._clip_dir.name))
        clip_s = time.monotonic() - began_clip
        began_warm = time.monotonic()
        warm = StreamingSession(self.loaded, replace(self.stream_config(), max_new_tokens=2))
        self.stream(warm, 2, 2, self.deadline)  # kernels, allocator, the decode thread's first frames
        del warm
        _free(self.device)
        self.report["setup"] = {
            "build_s": build_s,
            "clip_s": clip_s,
            "warmup_s": time.monotonic() - began_warm,
            "compile_available": compile_available(),
        }
        self.log(f"setup done: {self.report['model']['parameters'] / 1e9:.2f} B parameters")

    # -- phases -------------------------------------------------------------------------------
    def decode_mode(self, mode: str, deadline: float) -> dict:
        """One mode's session: `warmup_seconds` untimed (compilation, allocator), then `decode_seconds`
        timed. The session is kept (`self.sessions`): the 2 fps step phase goes on with the best one."""
        c = self.config
        if mode == "compiled" and not compile_available():
            return {"available": False, "note": "compiled: not available (StreamConfig has no `compile`)"}
        began = time.monotonic()
        try:
            session = StreamingSession(self.loaded, self.stream_config(mode=mode))
            rows, stopped = self.stream(session, 2, c.warmup_seconds + c.decode_seconds, deadline)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a compile failure is a result, not a crash
            session = None
            _free(self.device)
            return {"available": True, "error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        self.sessions[mode] = session
        warm, timed = rows[: c.warmup_seconds], rows[c.warmup_seconds :]
        per_token = [r["decode_ms"] / max(1, r["new_tokens"] - 1) for r in timed]
        result = {
            "available": True,
            "warmup_steps": len(warm),
            "warmup_s": sum(r["step_ms"] for r in warm) / 1000,
            "first_step_ms": rows[0]["step_ms"] if rows else None,
            "timed_steps": len(timed),
            "ms_per_token_median": _median(per_token),
            "ms_per_token_p90": _percentile(per_token, 90),
            "ms_per_token_min": min(per_token) if per_token else None,
            "step_ms_median": _median([r["step_ms"] for r in timed]),
            "prefill_ms_median": _median([r["prefill_ms"] for r in timed]),
            "ms_per_token_series": [r["decode_ms"] / max(1, r["new_tokens"] - 1) for r in rows],
            "wall_s": time.monotonic() - began,
            "stopped": stopped,
        }
        if not timed:
            result["note"] = "no timed step within the phase's share (warm-up / compilation took it)"
        return result

    def phase_decode(self, deadline: float) -> dict:
        """Eager vs compiled decoding, same stream; eager gets 40 % of the share, compiled the rest."""
        start = time.monotonic()
        eager = self.decode_mode("eager", start + 0.4 * (deadline - start))
        self.report["phases"]["decode"] = {"status": "running", "eager": eager}
        self.save(plot=False)
        compiled = self.decode_mode("compiled", deadline)
        result = {
            "definition": "decode_ms / (new_tokens - 1) per stream second: one decode forward + sampling "
            "per token (the first token comes from the prefill)",
            "new_tokens": self.config.new_tokens,
            "eager": eager,
            "compiled": compiled,
            "speedup": None,
        }
        e, k = eager.get("ms_per_token_median"), compiled.get("ms_per_token_median")
        if e and k:
            result["speedup"] = e / k
            self.best_mode = "compiled" if k < e else "eager"
            # what a fresh compiled session costs before its first timed step (its first steps' extra time)
            self.compile_cost_s = max(0.0, compiled["warmup_s"] - eager["warmup_s"])
            result["compile_warmup_extra_s"] = self.compile_cost_s
        for mode in list(self.sessions):
            if mode != self.best_mode:
                del self.sessions[mode]
        _free(self.device)
        result["best_mode"] = self.best_mode
        done = e and (k or not compiled.get("available") or "error" in compiled)
        result["status"] = "done" if done else "partial"
        return result

    def phase_step(self, deadline: float) -> dict:
        """The per-second step at 2 fps: the decode phase's session in the best mode goes on (no second
        compilation), into the steady state once the vision window is full."""
        from .report import summarize_policy

        c = self.config
        session = self.sessions.pop(self.best_mode, None)
        continued = session is not None
        if session is None:
            session = StreamingSession(self.loaded, self.stream_config(mode=self.best_mode))
        first_t = session.round
        rows, stopped = self.stream(session, 2, c.step_seconds, deadline)
        session = None
        self.sessions.clear()
        _free(self.device)
        steady = [r for r in rows if r["t"] >= c.vision_window]
        summary = summarize_policy(rows) if rows else {"seconds": 0}
        step = [r["step_ms"] for r in (rows if continued else rows[1:])]
        result = {
            "fps": 2,
            "mode": self.best_mode,
            "continues_decode_session_from_s": first_t if continued else None,
            "vision_tokens_per_second": self.tokens_per_second(2),
            "seconds": len(rows),
            "summary": summary,
            "step_ms_median": _median(step),
            "step_ms_p99": _percentile(step, 99),
            "steady_step_ms_median": _median([r["step_ms"] for r in steady]),
            "steady_step_ms_p99": _percentile([r["step_ms"] for r in steady], 99),
            "wait_ms_median": _median([r["wait_ms"] for r in rows]),
            "loop_ms_p99": _percentile([_loop_ms(r) for r in rows], 99),
            "real_time": (_percentile([_loop_ms(r) for r in rows], 99) <= REAL_TIME_MS) if rows else None,
            "series": rows,
            "stopped": stopped,
        }
        result["status"] = "done" if len(rows) == c.step_seconds else "partial"
        return result

    def sweep_mode(self, deadline: float) -> tuple[str, str]:
        """Compiled in the sweep only if it was faster and its compilation (one per fps: the static
        cache's size depends on the fps) fits in half the sweep's share; eager otherwise."""
        if self.best_mode != "compiled":
            return "eager", "eager was the faster (or the only) decode path"
        cost = self.compile_cost_s * len(self.config.sweep)
        if cost > 0.5 * self.left(deadline):
            return (
                "eager",
                f"a compilation per fps ({cost:.0f} s in all) would take over half the sweep's share",
            )
        return "compiled", "compiled was faster and its compilations fit"

    def phase_sweep(self, deadline: float) -> dict:
        c = self.config

        def not_real_time(rows):  # with two slow seconds after the warm-up the p99 fails: stop there
            if sum(_loop_ms(r) > REAL_TIME_MS for r in rows[1:]) >= 2:
                return "not real time"
            return None

        mode, why_mode = self.sweep_mode(deadline)
        expect_s = self.compile_cost_s if mode == "compiled" else None
        points, stopped = [], None
        for fps in sorted(c.sweep):
            if self.left(deadline) <= 0:
                stopped = f"time budget before {fps} fps"
                break
            if mode == "compiled":  # a new static cache size: drop the last fps's graphs (and their memory)
                with contextlib.suppress(Exception):
                    torch._dynamo.reset()
            _reset_peak(self.device)
            try:
                session = StreamingSession(self.loaded, self.stream_config(fps=fps, mode=mode))
                rows, why = self.stream(session, fps, c.sweep_seconds, deadline, not_real_time, expect_s)
            except torch.OutOfMemoryError:
                rows, why = [], "out of memory"
            finally:
                session = None
                _free(self.device)
            step = [r["step_ms"] for r in rows[1:]]
            loop = [_loop_ms(r) for r in rows[1:]]
            p99 = _percentile(loop, 99)
            complete = len(rows) == c.sweep_seconds
            real_time = False if why and why != "time budget" else (p99 <= REAL_TIME_MS if complete else None)
            point = {
                "fps": fps,
                "vision_tokens_per_second": self.tokens_per_second(fps),
                "seconds": len(rows),
                "step_ms_median": _median(step),
                "step_ms_p99": _percentile(step, 99),
                "step_ms_max": max(step) if step else None,
                "loop_ms_median": _median(loop),
                "loop_ms_p99": p99,
                "prefill_ms_median": _median([r["prefill_ms"] for r in rows[1:]]),
                "decode_ms_median": _median([r["decode_ms"] for r in rows[1:]]),
                "wait_ms_median": _median([r["wait_ms"] for r in rows[1:]]),
                "cache_tokens_max": max((r["cache_tokens"] for r in rows), default=None),
                "peak_device_mb": _peak_mb(self.device),
                "real_time": real_time,
                "stopped": why,
                "step_ms_series": [r["step_ms"] for r in rows],
            }
            points.append(point)
            self.report["phases"]["fps_sweep"] = {"status": "running", "points": points}
            self.save(plot=False)
            self.log(f"  {fps} fps: p99 {p99 or 0:.0f} ms, real time {real_time}")
            if real_time is not True:
                stopped = f"{fps} fps: " + ("not real time" if real_time is False else (why or "incomplete"))
                break
        passing = [p["fps"] for p in points if p["real_time"]]
        done = len(points) == len(c.sweep) or any(p["real_time"] is False for p in points)
        peaks = [p["peak_device_mb"] for p in points if p["peak_device_mb"] is not None]
        return {
            "peak_device_mb": max(peaks) if peaks else None,
            "mode": mode,
            "mode_reason": why_mode,
            "criterion": f"p99 of step + frame wait <= {REAL_TIME_MS:.0f} ms per stream second "
            "(the loop's period; the first second is a warm-up)",
            "points": points,
            "max_real_time_fps": max(passing) if passing else None,
            "stopped": stopped,
            "status": "done" if done else "partial",
        }

    def phase_policies(self, deadline: float) -> dict:
        from .report import summarize, summarize_policy

        c = self.config
        seconds = int(round(c.policy_minutes * 60))
        sessions = {
            policy: StreamingSession(self.loaded, self.stream_config(policy=policy)) for policy in c.policies
        }
        limits = {"recompute": c.recompute_seconds} if c.recompute_seconds else {}
        series, stopped = self.stream_lockstep(sessions, 2, seconds, deadline, limits)
        sessions = None
        _free(self.device)
        targets = {p: min(seconds, limits.get(p, seconds)) for p in series}
        reached = [len(rows) for rows in series.values()]
        common = min(reached) if reached else 0
        over_common = summarize({p: rows[:common] for p, rows in series.items()}) if common else {}
        return {
            "mode": "eager",
            "fps": 2,
            "seconds_target": seconds,
            "common_seconds": common,
            "summary": {p: summarize_policy(rows) for p, rows in series.items()},
            "summary_over_common_seconds": {p: s for p, s in over_common.items() if p in series},
            "ratios": over_common.get("ratios", {}),
            "series": series,
            "stopped": stopped,
            "seconds_target_by_policy": targets,
            "status": "done" if all(len(series[p]) >= n for p, n in targets.items()) else "partial",
        }

    def update_memory(self) -> None:
        phases = self.report["phases"]
        by_phase = {n: phases[n].get("peak_device_mb") for n in PHASES if n != "memory" and n in phases}
        sweep = {
            str(p["fps"]): p.get("peak_device_mb") for p in phases.get("fps_sweep", {}).get("points", [])
        }
        peaks = [v for v in by_phase.values() if v is not None]
        self.report["phases"]["memory"] = {
            "status": "done" if any(p.get("wall_s") for p in phases.values()) else "not run",
            "device": str(self.device),
            "peak_device_mb": max(peaks) if peaks else None,
            "weights_mb": (self.report.get("model") or {}).get("weights_mb"),
            "device_total_mb": (self.report.get("machine") or {}).get("device_total_mb"),
            "by_phase_mb": by_phase,
            "by_sweep_fps_mb": sweep,
            "rss_mb": psutil.Process().memory_info().rss / 2**20,
            "note": None if self.device.type == "cuda" else "no device memory on cpu: peak_device_mb is null",
        }


def targets(report: dict) -> dict:
    """Issue 28's targets, where this run measured what they need (None: not measured)."""
    phases = report["phases"]
    sweep = phases.get("fps_sweep", {})
    points = sweep.get("points", [])
    passing = [p["fps"] for p in points if p["real_time"]]

    def real_time_at(fps: int) -> bool | None:  # (the sweep stops at its first failure)
        if passing and max(passing) >= fps:
            return True
        if any(p["real_time"] is False and p["fps"] <= fps for p in points):
            return False
        return None

    return {
        "step p99 < 1 s at 2 fps": phases.get("step_2fps", {}).get("real_time"),
        "8 fps real time (the paper)": real_time_at(8),
        "24 fps real time (3x the paper)": real_time_at(24),
    }


def _loop_ms(row: dict) -> float:
    """The step loop's time for one stream second: the step and the wait for its frames."""
    return row["step_ms"] + row["wait_ms"]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_gpu_bench(config: GpuBenchConfig, command: str | None = None, quiet: bool = False) -> dict:
    return GpuBench(config, command, quiet).run()
