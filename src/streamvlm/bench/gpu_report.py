"""Markdown tables and a plot for `streamvlm bench --suite gpu` reports, partial ones included."""

from pathlib import Path


def _f(value, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict) -> str:
    machine = report.get("machine") or {}
    model = report.get("model") or {}
    config = report.get("config") or {}
    phases = report.get("phases") or {}
    budget = report.get("budget") or {}
    device = machine.get("gpu") or machine.get("device") or config.get("device")
    lines = [
        "# streamvlm GPU benchmark" + (" (dry run)" if config.get("dry_run") else ""),
        "",
        f"- device: {device}; torch {machine.get('torch', '?')}; {config.get('dtype')}; "
        f"date {report.get('date')}",
        f"- model: {model.get('shape') or config.get('model')} shape, "
        f"{_f((model.get('parameters') or 0) / 1e9, 2)} B parameters, "
        f"{model.get('text_layers')} text layers, "
        f"{model.get('vision_layers')} vision blocks, attention {model.get('attn_implementation')}",
        f"- frames {config.get('size', ['?', '?'])[0]}x{config.get('size', ['?', '?'])[1]}: "
        f"{model.get('vision_tokens_per_second_at_2fps')} vision tokens per second at 2 fps; "
        f"{config.get('new_tokens')} tokens generated every second",
        f"- budget {_f(budget.get('budget_s'), 0)} s, elapsed {_f(budget.get('elapsed_s'), 1)} s; "
        f"complete: {_f(report.get('complete'))}"
        + (f"; {report['stopped']}" if report.get("stopped") else ""),
    ]
    if report.get("command"):
        lines.append(f"- command: `{report['command']}`")
    for key, ok in (report.get("targets") or {}).items():
        lines.append(f"- target {key}: {'not measured' if ok is None else ('PASS' if ok else 'FAIL')}")

    decode = phases.get("decode", {})
    lines += ["", f"## Decode: ms per token, eager vs compiled ({decode.get('status', 'not run')})", ""]
    if decode.get("eager") or decode.get("compiled"):
        lines += [
            "| mode | ms/token median | p90 | timed steps | warm-up s | step ms median | note |",
            "|---|---|---|---|---|---|---|",
        ]
    for mode in ("eager", "compiled"):
        m = decode.get(mode)
        if not m:
            continue
        note = m.get("note") or m.get("error") or m.get("stopped") or ""
        lines.append(
            f"| {mode} | {_f(m.get('ms_per_token_median'), 2)} | {_f(m.get('ms_per_token_p90'), 2)} | "
            f"{_f(m.get('timed_steps'))} | {_f(m.get('warmup_s'), 1)} | {_f(m.get('step_ms_median'))} | "
            f"{note} |"
        )
    if decode.get("speedup"):
        lines.append(
            f"\n- compiled speed-up: **{decode['speedup']:.2f}×** (best mode: {decode.get('best_mode')})"
        )

    step = phases.get("step_2fps", {})
    lines += ["", f"## Per-second step at 2 fps ({step.get('status', 'not run')})", ""]
    if step.get("seconds"):
        s = step.get("summary", {})
        lines += [
            "| mode | vision tok/s | seconds | median ms | p99 ms | steady median | steady p99 | prefill | "
            "decode | evict | frame wait | cache tok | real time |",
            "|" + "---|" * 13,
            f"| {step.get('mode')} | {step.get('vision_tokens_per_second')} | {step['seconds']} | "
            f"{_f(step.get('step_ms_median'))} | {_f(step.get('step_ms_p99'))} | "
            f"{_f(step.get('steady_step_ms_median'))} | {_f(step.get('steady_step_ms_p99'))} | "
            f"{_f(s.get('prefill_ms_median'))} | {_f(s.get('decode_ms_median'))} | "
            f"{_f(s.get('evict_ms_median'), 2)} | {_f(step.get('wait_ms_median'), 2)} | "
            f"{_f(s.get('cache_tokens_max'))} | {_f(step.get('real_time'))} |",
        ]

    sweep = phases.get("fps_sweep", {})
    lines += ["", f"## Real-time fps sweep ({sweep.get('status', 'not run')})", ""]
    if sweep.get("points"):
        lines += [
            "| fps | vision tok/s | seconds | median ms | p99 ms | loop p99 ms | prefill | decode | "
            "frame wait | cache tok | peak MB | real time |",
            "|" + "---|" * 12,
        ]
        for p in sweep["points"]:
            lines.append(
                f"| {p['fps']} | {p['vision_tokens_per_second']} | {p['seconds']} | "
                f"{_f(p['step_ms_median'])} | "
                f"{_f(p['step_ms_p99'])} | {_f(p.get('loop_ms_p99'))} | {_f(p['prefill_ms_median'])} | "
                f"{_f(p['decode_ms_median'])} | "
                f"{_f(p['wait_ms_median'], 2)} | {_f(p['cache_tokens_max'])} | "
                f"{_f(p['peak_device_mb'], 0)} | "
                f"{_f(p['real_time']) if p['real_time'] is not None else 'incomplete'} |"
            )
        lines.append(
            f"\n- highest real-time fps: **{_f(sweep.get('max_real_time_fps'))}** ({sweep.get('criterion')})"
        )
        if sweep.get("stopped"):
            lines.append(f"- sweep stopped: {sweep['stopped']}")

    memory = phases.get("memory", {})
    lines += ["", "## Peak device memory", ""]
    if memory.get("peak_device_mb") is not None:
        by_phase = ", ".join(
            f"{k} {_f(v, 0)}" for k, v in memory.get("by_phase_mb", {}).items() if v is not None
        )
        lines.append(
            f"- peak allocated **{memory['peak_device_mb']:.0f} MB** of "
            f"{_f(memory.get('device_total_mb'), 0)} MB "
            f"(weights {_f(memory.get('weights_mb'), 0)} MB); by phase: {by_phase}"
        )
    else:
        lines.append(f"- {memory.get('note') or 'not measured'}; RSS {_f(memory.get('rss_mb'), 0)} MB")

    policies = phases.get("policies", {})
    lines += ["", f"## Streaming vs full vs recompute ({policies.get('status', 'not run')})", ""]
    summary = policies.get("summary_over_common_seconds") or {}
    if summary:
        lines += [
            f"Over the first {policies.get('common_seconds')} s of stream, which every policy reached "
            "(seconds reached / target: "
            + ", ".join(
                f"{p} {len(r)} / {(policies.get('seconds_target_by_policy') or {}).get(p, '?')}"
                for p, r in policies.get("series", {}).items()
            )
            + ").",
            "",
            "| policy | median ms/s | p99 ms/s | prefill | decode | evict | cache tok | KV MB |",
            "|" + "---|" * 8,
        ]
        for policy, s in summary.items():
            if not s.get("seconds"):
                continue
            lines.append(
                f"| {policy} | {_f(s['ms_per_stream_second_median'])} | "
                f"{_f(s['ms_per_stream_second_p99'])} | "
                f"{_f(s['prefill_ms_median'])} | {_f(s['decode_ms_median'])} | "
                f"{_f(s['evict_ms_median'], 2)} | "
                f"{s['cache_tokens_max']} | {_f(s['kv_mb_last'])} |"
            )
        for key, value in (policies.get("ratios") or {}).items():
            lines.append(f"- {key}: {value:.2f}")
    for name, phase in phases.items():
        if str(phase.get("status", "")).startswith("error"):
            lines.append(f"\n- {name}: {phase['status']}")
    return "\n".join(lines) + "\n"


def plot_gpu(report: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = report.get("phases") or {}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax_dec, ax_step, ax_sweep, ax_pol = axes.ravel()

    decode = phases.get("decode", {})
    modes = [m for m in ("eager", "compiled") if (decode.get(m) or {}).get("ms_per_token_median")]
    ax_dec.bar(
        modes,
        [decode[m]["ms_per_token_median"] for m in modes],
        color=["tab:blue", "tab:orange"][: len(modes)],
    )
    for m in ("eager", "compiled"):
        series = (decode.get(m) or {}).get("ms_per_token_series")
        series = (series or [])[(decode.get(m) or {}).get("warmup_steps", 0) :]  # the timed steps
        if series:
            ax_dec.plot([m] * len(series), series, "k.", ms=3, alpha=0.5)
    ax_dec.set(ylabel="ms per decoded token", title="decode: eager vs compiled")

    step = phases.get("step_2fps", {})
    rows = step.get("series") or []
    if rows:
        ax_step.plot([r["t"] for r in rows], [r["step_ms"] for r in rows], lw=1, label="step")
        ax_step.plot([r["t"] for r in rows], [r["prefill_ms"] for r in rows], lw=0.8, label="prefill")
        ax_step.plot([r["t"] for r in rows], [r["decode_ms"] for r in rows], lw=0.8, label="decode")
    ax_step.axhline(1000, color="grey", ls="--", lw=0.8, label="real time")
    ax_step.set(xlabel="stream time (s)", ylabel="ms", title="per-second step at 2 fps")

    sweep = phases.get("fps_sweep", {})
    points = [p for p in sweep.get("points", []) if p.get("step_ms_median") is not None]
    if points:
        fps = [p["fps"] for p in points]
        ax_sweep.plot(fps, [p["step_ms_median"] for p in points], "o-", label="median")
        ax_sweep.plot(fps, [p["step_ms_p99"] for p in points], "s--", label="p99")
        ax_sweep.set_xscale("log", base=2)
        ax_sweep.set_xticks(fps, [str(f) for f in fps])
    ax_sweep.axhline(1000, color="grey", ls="--", lw=0.8, label="real time")
    ax_sweep.set(xlabel="input fps", ylabel="ms per stream second", title="fps sweep")

    for policy, series in (phases.get("policies", {}).get("series") or {}).items():
        if series:
            ax_pol.plot([r["t"] for r in series], [r["step_ms"] for r in series], lw=0.8, label=policy)
    ax_pol.axhline(1000, color="grey", ls="--", lw=0.8, label="real time")
    ax_pol.set(
        xlabel="stream time (s)", ylabel="ms per stream second", title="policies at 2 fps", yscale="log"
    )

    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    machine = report.get("machine") or {}
    memory = phases.get("memory", {})
    peak = memory.get("peak_device_mb")
    cfg = report.get("config") or {}
    fig.suptitle(
        f"{(report.get('model') or {}).get('shape') or cfg.get('model')} · {cfg.get('dtype')} · "
        f"{machine.get('gpu') or machine.get('device')}"
        + (f" · peak {peak / 1024:.1f} GiB" if peak else "")
        + (" · dry run" if cfg.get("dry_run") else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
