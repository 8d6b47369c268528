"""What a checkpoint sees, token for token, against the research code's layouts (method §7.2).

The references below are written from the facts of the research code (mit-han-lab/streaming-vlm:
`inference/inference.py`, `utils/get_qwen_range.py`, `data/lmm_dataset.py`), independently of
streamvlm's renderer: whole conversations go through the tokenizer's chat template and are
tokenised in one piece, and the cache is edited by token pattern as the research code edits it.
Where the research code differs from streamvlm on purpose, a reference option turns that one
difference on or off, and the tests show both sides.
"""

import json
from dataclasses import replace

import numpy as np
import pytest

from streamvlm import StreamConfig, StreamingSession
from streamvlm.cache import Kind
from streamvlm.data.formats import StreamRecord
from streamvlm.data.sample import IGNORE, RenderOptions, render_sample
from streamvlm.engine.prompt import Renderer
from streamvlm.errors import StreamvlmError
from streamvlm.sources import synthetic_frames
from streamvlm_world.plugin import SHIPPED

SYSTEM_TURN = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"  # the template's default


class Research:
    """Token-level helpers shared by both references."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.encode = lambda text: tokenizer.encode(text, add_special_tokens=False)
        self.im_start, self.im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
        (self.lf,) = self.encode("\n")
        self.header = {role: [self.im_start, *self.encode(f"{role}\n")] for role in ("user", "assistant")}
        self.header["previous text"] = [self.im_start, *self.encode("previous text\n")]
        self.time = self.encode("Time")
        self.vision_start, self.vision_end = tokenizer.convert_tokens_to_ids(
            ["<|vision_start|>", "<|vision_end|>"]
        )

    def render(self, messages, pads: int, generation_prompt: bool) -> str:
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
        return text.replace("<|video_pad|>", "<|video_pad|>" * pads)  # what the processor expands

    def turns(self, ids, role, with_newline=True):
        """(first, last) index of every `role` turn, from its header to its <|im_end|> (and the
        newline after it, when there is one and `with_newline`)."""
        head, found, i = self.header[role], [], 0
        while i + len(head) <= len(ids):
            if ids[i : i + len(head)] != head:
                i += 1
                continue
            end = ids.index(self.im_end, i + len(head))
            newline = with_newline and end + 1 < len(ids) and ids[end + 1] == self.lf
            found.append((i, end + newline))
            i = end + 1
        return found


def research_inference(tok, previous, query, seconds, replies, pads, windows, sink, window):
    """The retained ids after `seconds` rounds of the research inference, each reply teacher forced
    (the model wrote `reply + " ..."` and its <|im_end|>): per round, evict, then append the turn.
    `windows`: (vision rounds, text rounds) kept."""
    r = Research(tok)
    vision_rounds, text_rounds = windows
    ids: list[int] = []
    for i in range(seconds):
        if i >= text_rounds:  # the oldest reply moves into the memory, its turn goes
            first, last = r.turns(ids, "assistant")[0]
            keep_tail = len(r.encode(" ...")) + 1 + (ids[last] == r.lf)  # " ...", <|im_end|>[, "\n"]
            content = ids[first + len(r.header["assistant"]) : last + 1 - keep_tail]
            shell = ids[first : first + len(r.header["assistant"])] + ids[last + 1 - keep_tail : last + 1]
            _, memory_end = r.turns(ids, "previous text", with_newline=False)[0]
            ids = ids[:memory_end] + content + ids[memory_end:first] + shell + ids[last + 1 :]
            first, last = r.turns(ids, "assistant")[-text_rounds]
            del ids[first : last + 1]
            if vision_rounds > text_rounds:  # and the oldest time text still there
                first = next(k for k in range(len(ids)) if ids[k : k + len(r.time)] == r.time)
                del ids[first : ids.index(r.vision_start, first)]
        if vision_rounds <= i and vision_rounds < text_rounds:  # the oldest vision still there
            first = ids.index(r.vision_start)
            del ids[first : ids.index(r.vision_end, first) + 1]
        if i >= max(windows):  # vision and text both gone: the whole user turn
            first, last = r.turns(ids, "user")[0]
            del ids[first : last + 1]
        if i > 0:  # the memory: head `sink` + tail, the research code's index arithmetic
            first, last = r.turns(ids, "previous text")[0]
            cut_from, cut_to = first + len(r.header["previous text"]) + sink, last - window - 1
            if cut_from <= cut_to:
                del ids[cut_from : cut_to + 1]
        time = {"type": "text", "text": f"Time={float(i):.1f}-{float(i + 1):.1f}s"}
        if i == 0:
            user = [time, {"type": "video"}, {"type": "text", "text": query}]
            memory = {"role": "previous text", "content": previous}
            new = r.encode(r.render([memory, {"role": "user", "content": user}], pads, True))
        else:
            text = r.render([{"role": "user", "content": [time, {"type": "video"}]}], pads, True)
            assert text.startswith(SYSTEM_TURN) and len(SYSTEM_TURN) == 58  # its SYSTEM_PROMPT_OFFSET
            new = r.encode("\n" + text[len(SYSTEM_TURN) :])
            new = new[1:] if ids[-1] == r.lf else new  # (a user turn's newline already ends the ids)
        ids += new
        words = " ".join(replies[i].split())
        ids += r.encode(f" {words} ..." if words else " ...") + [r.im_end]
    return ids


def research_training(tok, record, pads, sink, window, newline_reply=True, space_after_time=True):
    """Ids and labels of the research training sample for `record` (1 s per round, `pads` vision
    tokens each). `newline_reply`: each target starts with "\\n" ("{answer}\\n{phrase} ..."), so the
    assistant header ends in "\\n\\n"; `space_after_time`: rounds after the first read "Time=a-bs "."""
    r = Research(tok)
    conversation = [{"role": "previous text", "content": record.previous}]
    words, used = sorted(record.words, key=lambda w: w[1]), 0
    for k in range(record.seconds):
        start, end = record.video_start + k, record.video_start + k + 1
        phrase = ""
        while used < len(words) and words[used][1] <= end:  # words said by the end of the second
            phrase += " " + words[used][2].strip()
            used += 1
        time = f"Time={start:.1f}-{end:.1f}s" + (" " if k and space_after_time else "")
        conversation.append({"role": "user", "content": [{"type": "text", "text": time}, {"type": "video"}]})
        reply = ("\n" if newline_reply else "") + phrase + " ..."
        conversation.append({"role": "assistant", "content": reply})
    ids = r.encode(r.render(conversation, pads, generation_prompt=False))
    first, last = r.turns(ids, "previous text")[0]
    if (sink or window) and first + sink + window <= last + 1:  # counted from the block's ends
        del ids[first + sink : last - window + 1]
    labels, skip = [IGNORE] * len(ids), len(r.header["assistant"])  # (3 tokens with Qwen's tokenizer)
    for start, _ in r.turns(ids, "assistant"):
        end = ids.index(r.im_end, start)
        labels[start + skip : end + 1] = ids[start + skip : end + 1]  # after <|im_start|>assistant\n
    return ids, labels


def vision_tokens(loaded, frames) -> int:
    _, grid = loaded.processor(frames)
    return int(grid.prod()) // loaded.model.config.vision_config.spatial_merge_size**2


def sample_pads(loaded, sample) -> int:
    return int(sample["video_grid_thw"][0].prod()) // loaded.model.config.vision_config.spatial_merge_size**2


def stream(loaded, seconds, replies, **config):
    """The retained ids after `seconds` teacher-forced seconds, the session, and its pads per second."""
    session = StreamingSession(loaded, StreamConfig(greedy=True, **config))
    frames = list(synthetic_frames(seconds, 2, (56, 56)))
    for i in range(seconds):
        session.step(np.stack(frames[2 * i : 2 * i + 2]), float(i), float(i + 1), reply=replies[i])
    return session.layout.token_ids().tolist(), session, vision_tokens(loaded, np.stack(frames[:2]))


REPLIES = ["Red serves", "", "Blue returns it", "", "Red leads three to one", "", "Blue serves"]
PREVIOUS = "Red are the Foxes."


@pytest.mark.parametrize("windows", [(2, 2), (1, 3), (3, 1)])
@pytest.mark.parametrize("seconds", [1, 2, 3, 5, 7])
def test_stream_ids_equal_the_research_inference(tiny, seconds, windows):
    """A few seconds of stream with a query, a previous text, moves into the memory and memory cuts,
    equal and unequal (vision, text) windows: the retained ids are the research inference's, with
    the one documented difference that its memory keeps one tail token fewer (its
    `text_sliding_window` w keeps w - 1)."""
    sink, window = 6, 8
    query = "Commentate on this match"
    vision_window, text_rounds = windows
    config = dict(vision_window=vision_window, text_rounds=text_rounds, text_sink=sink, text_window=window)
    ids, session, pads = stream(tiny, seconds, REPLIES, query=query, previous_text=PREVIOUS, **config)
    r = Research(tiny.tokenizer)
    assert len(r.encode(PREVIOUS)) < sink + window  # (a longer one: the next test)
    inputs = (tiny.tokenizer, PREVIOUS, query, seconds, REPLIES, pads, windows, sink)
    reference = research_inference(*inputs, window + 1)
    assert ids == reference + [r.lf]  # (the research code adds that newline with the next turn)
    literal = research_inference(*inputs, window)
    full = session.layout.find(Kind.MEMORY).n == sink + window
    assert len(ids) - 1 - len(literal) == full  # a full memory: sink + w here, sink + w - 1 there
    if seconds == 7 and windows == (2, 2):
        assert full


def test_query_sits_in_the_first_user_turn_and_leaves_with_it(tiny):
    query = "Commentate on this match"
    r = Research(tiny.tokenizer)
    early, _, _ = stream(tiny, 2, REPLIES, query=query, vision_window=2, text_rounds=2)
    late, _, _ = stream(tiny, 3, REPLIES, query=query, vision_window=2, text_rounds=2)
    q = r.encode(query)
    vision_end = tiny.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    at = early.index(vision_end)
    assert early[at + 1 : at + 1 + len(q) + 1] == [*q, r.im_end]  # after round 0's frames
    assert not any(late[i : i + len(q)] == q for i in range(len(late)))  # gone at round 2


def test_round_zero_memory_is_cut_before_it_is_seen(tiny):
    """The research inference prefills the whole previous text in round 0 and cuts it from round 1 on;
    streamvlm cuts it first (what training shows). From round 1 on the ids agree."""
    previous = " ".join(f"word{i}" for i in range(12))
    windows = {"vision_window": 4, "text_rounds": 4, "text_sink": 3, "text_window": 5}
    for seconds, same in ((1, False), (2, True)):
        ids, _, pads = stream(tiny, seconds, REPLIES, previous_text=previous, **windows)
        reference = research_inference(tiny.tokenizer, previous, "", seconds, REPLIES, pads, (4, 4), 3, 5 + 1)
        assert (ids == reference + [Research(tiny.tokenizer).lf]) is same


def test_shipped_layout_keeps_the_query_in_the_prefix(tiny):
    """`query_turn: prefix` (the shipped world model's checkpoint): a user turn of its own, kept."""
    shipped = json.loads((SHIPPED / "streamvlm.json").read_text())
    assert shipped["query_turn"] == "prefix"  # what it was trained with
    query = "Commentate on this match"
    loaded = replace(tiny, defaults={**tiny.defaults, "query_turn": "prefix"})
    late, _, _ = stream(loaded, 3, REPLIES, query=query, vision_window=2, text_rounds=2)
    r = Research(tiny.tokenizer)
    head = r.encode(SYSTEM_TURN) + r.header["user"] + r.encode(query) + [r.im_end, r.lf]
    assert late[: len(head)] == head


def test_an_unknown_query_turn_is_refused(tiny):
    with pytest.raises(StreamvlmError, match="query_turn must be 'round' or 'prefix', not 'middle'"):
        StreamingSession(replace(tiny, defaults={**tiny.defaults, "query_turn": "middle"}))


def training_record(clip, previous):
    words = [(0.2, 0.6, "Red"), (0.6, 0.9, "serves"), (2.1, 2.5, "Blue"), (2.5, 3.0, "returns")]
    words.append((4.5, 4.9, "out"))
    return StreamRecord(str(clip), 0.0, 6.0, previous=previous, words=words)


def test_training_sample_equals_the_research_training_sample(clip, tiny):
    """lmm_dataset's sample for a 6 s window with a long previous text, less its two formatting quirks
    and with its header-counted cut given the sizes that keep streamvlm's content counts."""
    previous = " ".join(f"word{i}" for i in range(40))
    record = training_record(clip, previous)
    sample = render_sample(record, tiny, Renderer(tiny.tokenizer), RenderOptions(text_sink=6, text_window=10))
    pads, r = sample_pads(tiny, sample), Research(tiny.tokenizer)
    header = len(r.header["previous text"])
    ids, labels = research_training(tiny.tokenizer, record, pads, 6 + header, 10 + 2, False, False)
    assert sample["input_ids"].tolist() == ids
    assert sample["labels"].tolist() == labels

    # as the research code writes it: "\n" before every target, a space after later time stamps,
    # and its cut keeps 6 - header head and 10 - 2 tail tokens of the text
    quirky, _ = research_training(tiny.tokenizer, record, pads, 6, 10)
    assert len(quirky) != len(ids)
    plain, _ = research_training(tiny.tokenizer, record, pads, 6, 10, False, False)
    assert len(plain) == len(ids) - header - 2


def test_training_sample_ignores_no_quirk_silently(clip, tiny):
    """Each research formatting quirk alone changes the tokens: the equality above is not vacuous."""
    record = training_record(clip, "Red are the Foxes.")
    sample = render_sample(record, tiny, Renderer(tiny.tokenizer), RenderOptions())
    base, _ = research_training(tiny.tokenizer, record, sample_pads(tiny, sample), 0, 0, False, False)
    assert sample["input_ids"].tolist() == base
    for quirk in ((True, False), (False, True)):
        ids, _ = research_training(tiny.tokenizer, record, sample_pads(tiny, sample), 0, 0, *quirk)
        assert ids != base
