"""SFT on short overlapped chunks (method §5) with the HuggingFace `Trainer`.

Full attention inside each window (or, with `streaming_mask`, what the streaming policy keeps for
each round), positions of the final sequence, loss on assistant turns only
(optionally weighting digit tokens). Logits are computed only at labelled positions (a boolean
`logits_to_keep`), which keeps memory flat for a 150 k vocabulary. The HF `Trainer` brings the
progress bar, checkpoints, exact resume (optimizer, scheduler, RNG, data position), gradient
checkpointing, bf16, and multi-process training through `accelerate launch` / `torchrun`
(DDP, FSDP or DeepSpeed ZeRO-3 from the config). With a frozen tower, `vision_cache` computes its
output once per second of video (`train.features`) and the steps read it instead of frames.
"""

import json
import logging
import os
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.trainer_utils import get_last_checkpoint

from ..data.sample import IGNORE, RenderOptions, StreamDataset, collate
from ..errors import StreamvlmError
from ..models.load import load_model
from . import auxiliary, features
from .compat import load_full_checkpoint_weights
from .config import TrainConfig
from .precision import cpu_bf16_is_fast

log = logging.getLogger(__name__)


class StreamTrainer(Trainer):
    #: extra objectives (`train.auxiliary`), each weighted into the loss while training
    auxiliary: tuple = ()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        if right_padded(inputs.get("attention_mask")):  # causal attention never reaches the padding:
            inputs.pop("attention_mask")  # without a mask SDPA takes its faster causal kernel
        weights = inputs.pop("loss_weights")
        targets = {a.key: inputs.pop(a.key, None) for a in self.auxiliary}
        objectives = self.auxiliary if model.training else ()
        if "video_embeds" in inputs:  # stored vision features (`train.features`): the tower's output
            pooled = (inputs.pop("video_embeds"),)
            inputs["mm_encoder_outputs"] = {"video": BaseModelOutputWithPooling(pooler_output=pooled)}
        following = labels[:, 1:]
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = following != IGNORE  # predict token p+1 from position p
        with auxiliary.watched(objectives, targets):
            outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
        selected = following != IGNORE
        ce = F.cross_entropy(outputs.logits.float(), following[selected], reduction="none")
        w = weights[:, 1:][selected].to(ce.dtype)
        loss = (ce * w).sum() / w.sum().clamp_min(1e-8)
        for objective, extra in auxiliary.recorded_losses(objectives):
            loss = loss + objective.weight * extra
        return (loss, outputs) if return_outputs else loss


def right_padded(mask: torch.Tensor | None) -> bool:
    """Whether `mask` is a 2-D padding mask whose padding only follows each row's tokens (`collate`).
    A causal model then needs no mask: no real token can attend to a later position."""
    return mask is not None and mask.dim() == 2 and bool((mask[:, 1:] <= mask[:, :-1]).all())


class LossPlot(TrainerCallback):
    """Writes `losses.jsonl` as logs arrive, and `loss.png` (train and eval loss) at saves and at the end."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with open(self.output_dir / "losses.jsonl", "a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_losses(state.log_history, self.output_dir / "loss.png")

    on_train_end = on_save


class SyncLog(TrainerCallback):
    """Per rank, per optimizer step: the step and a checksum of the trainable weights (tests of DDP sync)."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir

    def on_step_end(self, args, state, control, model=None, **kwargs):
        rank = int(os.environ.get("RANK", 0))
        total = sum(float(p.detach().double().sum()) for p in model.parameters() if p.requires_grad)
        with open(self.output_dir / f"sync-rank{rank}.jsonl", "a") as f:
            f.write(json.dumps({"step": state.global_step, "checksum": total}) + "\n")


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if not train and not evals:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for points, label in ((train, "train loss"), (evals, "eval loss")):
        if points:
            ax.plot(*zip(*points, strict=True), label=label, marker="o" if label == "eval loss" else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if all(v > 0 for _, v in train + evals) else "linear")  # a zero loss: linear
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prepare_model(config: TrainConfig):
    loaded = load_model(config.model, min_pixels=config.min_pixels, max_pixels=config.max_pixels)
    model = loaded.model
    model.train()
    if config.freeze_vision:
        for p in model.model.visual.parameters():
            p.requires_grad_(False)
    if config.lora:
        from peft import LoraConfig, get_peft_model

        lora = config.lora
        # only the language model's projections: the vision tower's attention uses other names
        targets = rf"^model\.language_model\..*\.({'|'.join(lora.target_modules)})$"
        model = get_peft_model(
            model,
            LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets),
        )
    return loaded, model


def use_bf16(config: TrainConfig) -> bool:
    if config.bf16 != "auto":
        return bool(config.bf16)
    if torch.cuda.is_available() and config.device != "cpu":
        return torch.cuda.is_bf16_supported()
    return cpu_bf16_is_fast()  # CPU bfloat16 autocast: faster with bf16 instructions, far slower without


def train(config: TrainConfig, objectives: Sequence = ()) -> dict:
    """Fine-tune `config.model` on `config.train_data`; `objectives` (`train.auxiliary`) add their own
    targets to each sample and their losses to each step."""
    config.validate()
    if objectives and config.gradient_checkpointing:  # a recomputed forward pass would record twice
        raise StreamvlmError("train: auxiliary objectives need gradient_checkpointing off")
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2, default=str) + "\n")
    loaded, model = prepare_model(config)
    options = RenderOptions(
        **vars(config.windows()),
        fps=config.fps,
        number_loss_weight=config.number_loss_weight,
        text_only_fraction=config.text_only_fraction,
        text_only_labels=config.text_only_labels,
        time_shift_max=config.time_shift_max,
        targets=tuple(objectives),
        streaming_mask=config.streaming_mask,
    )
    train_set = StreamDataset(
        config.train_data,
        loaded,
        options,
        skip_bad=config.skip_bad,
        text_paths=config.text_data,
        worker_nice=config.loader_nice,
    )
    eval_set = (
        StreamDataset(config.eval_data, loaded, options, skip_bad=config.skip_bad)
        if config.eval_data
        else None
    )
    for name, dataset in (("train", train_set), ("eval", eval_set)):
        if dataset is not None and dataset.skipped:
            log.warning("%s: skipped %d bad samples", name, len(dataset.skipped))
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        bf16=use_bf16(config),
        activation_checkpointing=config.gradient_checkpointing,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if eval_set is not None and config.eval_steps else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        seed=config.seed,
        dataloader_num_workers=config.num_workers,
        remove_unused_columns=False,
        report_to="none",
        use_cpu=config.device == "cpu",
        deepspeed=config.deepspeed,
        fsdp=config.fsdp,
        fsdp_config=config.fsdp_config,
        ddp_backend="gloo" if distributed_cpu(config) else None,
    )
    if config.vision_cache:
        with args.main_process_first(desc="vision features"):
            stored = build_features(config, loaded, train_set, eval_set, args.device)
        for dataset in (train_set, eval_set):
            if dataset is not None:
                dataset.use_features(stored)
    callbacks = [LossPlot(out)] + ([SyncLog(out)] if config.sync_log else [])
    trainer = StreamTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=partial(collate, pad_id=loaded.tokenizer.pad_token_id or 0),
        callbacks=callbacks,
    )
    for objective in objectives:
        objective.check(model)
        objective.enable(model)
    trainer.auxiliary = tuple(objectives)
    resume = resolve_resume(config.resume, out)
    if resume:
        log.warning("resuming from %s", resume)
        if not config.lora and not config.deepspeed and not config.fsdp:
            load_full_checkpoint_weights(model, resume)
    result = trainer.train(resume_from_checkpoint=resume)
    metrics = dict(result.metrics)
    if eval_set is not None:
        metrics.update(trainer.evaluate())
    for objective in objectives:
        objective.disable(model)  # the saved model computes as any other
    if trainer.is_world_process_zero():
        save_final(trainer, loaded, out / "final", config)
        plot_losses(trainer.state.log_history, out / "loss.png")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def build_features(config: TrainConfig, loaded, train_set, eval_set, device):
    """The stored vision features of every video the datasets show (`train.features`), made on the
    run's device under the autocast the steps use."""
    visual = loaded.model.model.visual
    videos = train_set.videos + (eval_set.videos if eval_set is not None else [])
    dtype = torch.bfloat16 if use_bf16(config) else None
    home = next(visual.parameters()).device
    visual.to(device)
    try:
        root = Path(config.vision_cache)
        return features.build(loaded.model, loaded.processor, videos, root, config.fps, dtype)
    finally:
        visual.to(home)  # the trainer places the whole model


def distributed_cpu(config: TrainConfig) -> bool:
    """Several processes without GPUs: DDP over gloo."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and (
        config.device == "cpu" or not torch.cuda.is_available()
    )


def resolve_resume(resume: str, out: Path) -> str | None:
    if resume == "never":
        return None
    if resume == "auto":
        return get_last_checkpoint(str(out)) if out.is_dir() else None
    if not Path(resume).is_dir():
        raise StreamvlmError(f"resume: checkpoint {resume} does not exist")
    return resume


def save_final(trainer: Trainer, loaded, path: Path, config: TrainConfig) -> None:
    """A checkpoint `load_model` reads: merged weights, tokenizer and processor files, streaming defaults."""
    model = trainer.model
    if config.lora:
        model = model.merge_and_unload()
    model.save_pretrained(path, safe_serialization=True)
    loaded.tokenizer.save_pretrained(path)
    for name in ("preprocessor_config.json", "video_preprocessor_config.json", "streamvlm.json"):
        source = loaded.path / name
        if source.is_file():
            (path / name).write_bytes(source.read_bytes())
    defaults = (
        json.loads((path / "streamvlm.json").read_text()) if (path / "streamvlm.json").is_file() else {}
    )
    defaults.update(min_pixels=loaded.processor.min_pixels, max_pixels=loaded.processor.max_pixels)
    (path / "streamvlm.json").write_text(json.dumps(defaults, indent=2) + "\n")
