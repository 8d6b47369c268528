"""`streamvlm eval numbers`: teacher-forced accuracy on the numbers a model should say.

With the true earlier commentary in context (each window's previous text and its own replies, as
`streamvlm train` renders them), how often is the model's most likely next token the number the
reply says? A running score said in streaming compounds (a wrong number is copied forward until it
is reset), so streaming accuracy mixes the skill with its history; this measures the skill alone,
with one forward pass per window. Numbers are grouped by their reply line's second word, e.g.
"serves." (a copy of the last score) and "scores!" (a copy with one side plus one) in the world.
"""

import argparse
import json
import sys


def register(sub) -> None:
    from streamvlm.cache.policy import Windows
    from streamvlm.cli import positive_int
    from streamvlm.options import add_options

    p = sub.add_parser(
        "numbers",
        help="teacher-forced accuracy on the number tokens of training windows",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", nargs="+", help="chunked annotation JSONL (make-chunks output)")
    p.add_argument("--model", default=None, help="checkpoint dir (default: the shipped model)")
    add_options(p, Windows, only=("text_sink", "text_window"), unset=True, first="the model's")
    p.add_argument("--max-windows", type=positive_int, default=None, help="only the first N windows")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=cmd_numbers)


def number_accuracy(loaded, dataset, windows=None) -> dict:
    """{"accuracy", "numbers", "windows", "by_line": {second word: {"accuracy", "numbers"}}}."""
    import torch

    from streamvlm.data.sample import collate, number_tokens

    tokenizer = loaded.tokenizer
    numbers = number_tokens(tokenizer)
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    counts: dict[str, list[int]] = {}
    windows = range(len(dataset)) if windows is None else windows
    loaded.model.eval()
    for index in windows:
        batch = collate([dataset[index]], pad_id=0)
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "loss_weights")}
        with torch.no_grad():
            predicted = loaded.model(**inputs).logits[0, :-1].argmax(-1)
        ids, labels = batch["input_ids"][0], batch["labels"][0]
        for j in torch.nonzero((labels[1:] != -100) & numbers[ids[1:]]).flatten().tolist():
            starts = torch.nonzero(ids[: j + 1] == im_start).flatten()  # the reply's turn, up to the number
            turn = ids[int(starts[-1]) + 1 : j + 1] if len(starts) else ids[: j + 1]
            words = tokenizer.decode(turn).split()
            kind = words[2] if len(words) > 2 else "other"  # "assistant", first word, second word
            hit = counts.setdefault(kind, [0, 0])
            hit[0] += int(predicted[j] == ids[j + 1])
            hit[1] += 1
    total = [sum(h for h, _ in counts.values()), sum(n for _, n in counts.values())]

    def ratio(h: int, n: int) -> float | None:
        return h / n if n else None

    return {
        "accuracy": ratio(*total),
        "numbers": total[1],
        "windows": len(windows),
        "by_line": {k: {"accuracy": ratio(h, n), "numbers": n} for k, (h, n) in sorted(counts.items())},
    }


def cmd_numbers(args) -> int:
    from streamvlm.config import StreamConfig
    from streamvlm.data.sample import RenderOptions, StreamDataset
    from streamvlm.runner import load_for_run

    loaded = load_for_run(args.model)
    stream = StreamConfig.from_dict(loaded.defaults.get("stream", {}))  # the model's, else the method's
    options = RenderOptions(
        text_sink=stream.text_sink if args.text_sink is None else args.text_sink,
        text_window=stream.text_window if args.text_window is None else args.text_window,
    )
    dataset = StreamDataset(args.data, loaded, options)
    windows = range(min(len(dataset), args.max_windows or len(dataset)))
    print(json.dumps(number_accuracy(loaded, dataset, windows), indent=1), file=sys.stdout, flush=True)
    return 0
