"""Multiple-choice QA: letter scoring against a plain full forward, asking mid-stream leaves the
stream as it was, annotation formats and malformed items, accuracy tables, the command end to end."""

import json

import pytest
import torch
from helpers import full_forward, record_logits, retained_vision

from streamvlm import StreamConfig, StreamingSession
from streamvlm.cli import main
from streamvlm.errors import StreamvlmError
from streamvlm.eval.mcq import aggregate, load_annotations, mcq_prompt, spread, watch_seconds
from streamvlm.eval.transcripts import read_jsonl
from streamvlm.sources import ArraySource, synthetic_frames, write_video

LETTERS = ["A", "B", "C", "D"]


def test_letter_logits_equal_a_full_forward_of_the_same_tokens(tiny):
    session = StreamingSession(
        tiny, StreamConfig(greedy=True, max_new_tokens=3, vision_window=64, text_rounds=64)
    )
    for _ in session.run(ArraySource(synthetic_frames(3, 2, (56, 84), seed=3), 2)):
        pass
    before_ids, before_rows = session.layout.token_ids().clone(), session.cache.rows
    prompt = mcq_prompt("What bounces?", ["a ball", "a cube", "nothing", "a dog"])
    got = session.ask_choice(prompt, LETTERS)

    # the stream is back where it was
    assert torch.equal(session.layout.token_ids(), before_ids) and session.cache.rows == before_rows
    # reference: every token of the stream (the unfed end of the last reply included) + the question
    tok = tiny.tokenizer
    question = session.renderer.question(session.round, prompt)
    q_ids = torch.cat([s.ids for s in question])
    expected = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(q_ids.tolist(), skip_special_tokens=False) == expected
    ids = torch.cat([before_ids, q_ids])
    pixels, grids = retained_vision(session)
    logits = full_forward(session.model, ids, pixels, grids)[-1]  # positions from HF get_rope_index
    letter_ids = [tok.encode(c, add_special_tokens=False)[0] for c in LETTERS]
    assert torch.allclose(got, logits[letter_ids], atol=1e-5, rtol=0), (got, logits[letter_ids])
    assert len(set(got.tolist())) == 4


def test_asking_mid_stream_leaves_the_stream_undisturbed(tiny):
    options = dict(vision_window=2, text_rounds=2, text_sink=4, text_window=6, greedy=True, max_new_tokens=4)
    asked, plain = (StreamingSession(tiny, StreamConfig(**options)) for _ in range(2))
    asked.trace, plain.trace = record_logits(asked), record_logits(plain)
    frames = list(synthetic_frames(8, 2, (56, 84), seed=5))
    texts = {"asked": [], "plain": []}
    for name, session in (("asked", asked), ("plain", plain)):
        for chunk in ArraySource(frames, 2):
            texts[name].append(session.step(chunk.frames, chunk.start, chunk.end).text)
            if name == "asked":
                session.ask_choice(mcq_prompt("Which?", ["x", "y"]), ["A", "B"])
                session.ask_choice("Is it moving? Answer Yes or No.", ["Yes", "No"])
    assert asked.evictions >= 5
    assert texts["asked"] == texts["plain"]
    assert len(asked.trace) == len(plain.trace)
    for (e1, n1, l1), (e2, n2, l2) in zip(asked.trace, plain.trace, strict=True):
        assert (e1, n1) == (e2, n2) and torch.equal(l1, l2)


def test_choice_labels_must_start_with_distinct_tokens(tiny):
    session = StreamingSession(tiny, StreamConfig(greedy=True))
    with pytest.raises(StreamvlmError, match="distinct"):
        session.ask_choice("?", ["Yes", "Yeah"])


def mcq(id, task, video, realtime, options=("p", "q"), gt=0, question="Q?") -> dict:
    item = {"id": id, "task": task, "video": video, "realtime": realtime, "question": question, "gt": gt}
    return item if options is None else {**item, "options": list(options)}


def ovo_items() -> list:
    return [
        mcq(1, "EPM", "a.mp4", 1, ["p", "q", "r"], gt=2),
        mcq(2, "STU", "a.mp4", 2.5),
        mcq(3, "OCR", "b.mp4", 9, gt=1),
        {"id": 4, "task": "SSR", "video": "a.mp4", "test_info": [
            {"realtime": 1, "step": "open the box", "type": 0},
            {"realtime": 3, "step": "open the box", "type": 1},
        ]},
        {"id": 5, "task": "REC", "video": "b.mp4", "activity": "jump", "test_info": [
            {"realtime": 2, "count": 1}, {"realtime": 3, "count": 12},
        ]},
        {"id": 6, "task": "CRR", "video": "b.mp4", "question": "Who?", "answer": "x", "test_info": [
            {"realtime": 1, "type": 0},
        ]},
        # malformed
        mcq(7, "ASI", "a.mp4", 1, gt=5),
        mcq(8, "HLD", "a.mp4", -1),
        mcq(9, "ATR", "a.mp4", 1, options=None),
        {"id": 10, "task": "XYZ", "video": "a.mp4", "test_info": [{"realtime": 1}]},
        "not an item",
        mcq(11, "ACR", "missing.mp4", 1, gt=1),
    ]  # fmt: skip


def test_ovo_items_become_questions_and_malformed_ones_are_counted(tmp_path):
    path = tmp_path / "ovo.json"
    path.write_text(json.dumps(ovo_items()))
    fmt, questions, skipped = load_annotations(path)
    assert fmt == "ovo"
    by_key = {q.key: q for q in questions}
    assert sorted(by_key) == ["1", "11", "2", "3", "4#0", "4#1", "5#0", "6#0"]
    assert by_key["1"].choices == ["A", "B", "C"] and by_key["1"].answer == 2 and by_key["1"].time == 1.0
    assert "C. r" in by_key["1"].prompt
    assert by_key["4#0"].choices == ["Yes", "No"] and by_key["4#0"].answer == 1 and by_key["4#1"].answer == 0
    assert "open the box" in by_key["4#1"].prompt and by_key["4#1"].time == 3.0
    assert by_key["5#0"].choices[by_key["5#0"].answer] == "1" and "jump" in by_key["5#0"].prompt
    assert by_key["6#0"].answer == 1 and "Who?" in by_key["6#0"].prompt
    reasons = {s.item: s.reason for s in skipped}
    assert set(reasons) == {"5#1", "7", "8", "9", "10", "#11"}
    assert "above 9" in reasons["5#1"] and "'gt'" in reasons["7"] and "realtime" in reasons["8"]
    assert "options" in reasons["9"] and "XYZ" in reasons["10"] and "not a JSON object" in reasons["#11"]
    # the OVO-Bench split layout reads the same
    path.write_text(json.dumps({"backward": ovo_items()[:1], "realtime": ovo_items()[1:3], "forward": []}))
    assert [q.key for q in load_annotations(path, "ovo")[1]] == ["1", "2", "3"]
    path.write_text(json.dumps(ovo_items()[:2] * 2))
    with pytest.raises(StreamvlmError, match="more than once"):
        load_annotations(path)


def test_longvideobench_items(tmp_path):
    items = [
        {"id": "v1_0", "video_id": "v1", "video_path": "v1.mp4", "question": "Q?",
         "candidates": ["a", "b", "c"], "correct_choice": 1, "duration": 4.0, "question_category": "S2E",
         "duration_group": 15},
        {"id": "v2_0", "video_id": "v2", "question": "Q?", "option0": "a", "option1": "b", "option2": "N/A",
         "option3": "N/A", "option4": "N/A", "correct_choice": 0, "question_category": "E2O"},
        {"id": "v3_0", "video_id": "v3", "question": "Q?", "candidates": ["a", "b"], "correct_choice": 2},
    ]  # fmt: skip
    path = tmp_path / "lvb_val.json"
    path.write_text(json.dumps(items))
    fmt, questions, skipped = load_annotations(path)
    assert fmt == "lvb"
    assert [(q.video, q.time, q.task, q.group, q.choices, q.answer) for q in questions] == [
        ("v1.mp4", 4.0, "S2E", "15", ["A", "B", "C"], 1),
        ("v2.mp4", None, "E2O", None, ["A", "B"], 0),
    ]
    assert [s.item for s in skipped] == ["v3_0"] and "correct_choice" in skipped[0].reason
    path.write_text(json.dumps([{"foo": 1}]))
    with pytest.raises(StreamvlmError, match="--format"):
        load_annotations(path)


def test_accuracy_per_task_and_ovo_categories():
    marks = {"EPM": [1, 1], "ASI": [1, 0], "STU": [0], "OCR": [1], "REC": [1, 0], "CRR": [1], "ZZZ": [0]}
    rows = [{"task": t, "correct": bool(c)} for t, cs in marks.items() for c in cs]
    s = aggregate(rows, "ovo")
    assert s["n"] == 10 and s["accuracy"] == pytest.approx(6 / 10)
    assert s["tasks"]["ASI"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert s["categories"]["backward"] == {"tasks": ["EPM", "ASI"], "accuracy": 0.75}
    assert s["categories"]["real-time"] == {"tasks": ["STU", "OCR"], "accuracy": 0.5}
    assert s["categories"]["forward"] == {"tasks": ["REC", "CRR"], "accuracy": 0.75}
    assert s["task_mean"] == pytest.approx((1 + 0.5 + 0 + 1 + 0.5 + 1 + 0) / 7)
    assert s["other_tasks"] == ["ZZZ"]
    rows = [{"task": "S2E", "correct": True, "group": "15"}, {"task": "S2E", "correct": False, "group": "60"}]
    lvb = aggregate(rows, "lvb")
    assert lvb["groups"]["15"]["accuracy"] == 1.0 and lvb["tasks"]["S2E"]["accuracy"] == 0.5
    assert "categories" not in lvb


def test_watch_plan():
    assert watch_seconds(0.2) == 1 and watch_seconds(2.5) == 2 and watch_seconds(3) == 3
    assert spread(10, 4) == [0, 3, 6, 9] and spread(3, 4) == [0, 1, 2] and spread(5, 0) == [0, 1, 2, 3, 4]
    assert spread(7, 1) == [6]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcq-videos")
    write_video(root / "a.mp4", synthetic_frames(4, 2, (56, 84), seed=1), fps=2)
    write_video(root / "b.mp4", synthetic_frames(3, 2, (56, 84), seed=2), fps=2)
    return root


def run_mcq(tiny_dir, videos, annotations, out, *extra):
    argv = ["eval", "mcq", "--annotations", annotations, "--video-root", videos, "--model", tiny_dir]
    return main([str(a) for a in [*argv, "--out", out, "--quiet", *extra]])


def test_mcq_command_streaming_and_offline_agree_and_resume(tiny_dir, videos, tmp_path):
    ann = tmp_path / "ovo.json"
    ann.write_text(json.dumps(ovo_items()))
    stream_out, offline_out = tmp_path / "s.json", tmp_path / "o.json"
    # watching with silent replies and keeping everything, streaming and offline see the same tokens
    assert run_mcq(tiny_dir, videos, ann, stream_out, "--mode", "streaming", "--silent", "--policy=full") == 0
    assert run_mcq(tiny_dir, videos, ann, offline_out, "--mode", "offline", "--max-seconds", 0) == 0
    report = json.loads(stream_out.read_text())
    assert report["scores"]["n"] == 7 and report["answered_this_run"] == 7
    assert report["skipped"]["count"] == 7  # 6 malformed + 1 missing video
    assert report["skipped"]["reasons"]["video file not found"] == 1
    assert set(report["scores"]["categories"]) == {"real-time", "backward", "forward"}
    rows = {r["key"]: r for _, r in read_jsonl(tmp_path / "s.items.jsonl")}
    offline = {r["key"]: r for _, r in read_jsonl(tmp_path / "o.items.jsonl")}
    assert set(rows) == set(offline) == {"1", "2", "3", "4#0", "4#1", "5#0", "6#0"}
    assert rows["3"]["watched_s"] == 3  # asked at 9 s, b.mp4 ends at 3 s: asked at its end
    assert rows["2"]["watched_s"] == 2 and rows["4#1"]["watched_s"] == 3
    for key in rows:
        assert rows[key]["watched_s"] == offline[key]["watched_s"]
        assert rows[key]["logits"] == pytest.approx(offline[key]["logits"], abs=1e-3), key
        assert rows[key]["pred"] == offline[key]["pred"]
    assert (tmp_path / "s.md").read_text().startswith("# OVO multiple choice, streaming")

    # resume: nothing is asked again; other settings with the same answers file are refused
    assert run_mcq(tiny_dir, videos, ann, stream_out, "--mode", "streaming", "--silent", "--policy=full") == 0
    assert json.loads(stream_out.read_text())["answered_this_run"] == 0
    assert len((tmp_path / "s.items.jsonl").read_text().splitlines()) == 7
    assert run_mcq(tiny_dir, videos, ann, stream_out, "--mode", "streaming") == 2
    # a strict run stops at the first malformed item
    assert run_mcq(tiny_dir, videos, ann, tmp_path / "x.json", "--strict") == 2


def test_mcq_command_streaming_with_commentary_and_lvb_offline_sampling(tiny_dir, videos, tmp_path):
    ann = tmp_path / "ovo.json"
    ann.write_text(json.dumps(ovo_items()[:2]))
    out = tmp_path / "c.json"
    assert run_mcq(tiny_dir, videos, ann, out, "--mode=streaming", "--max-new-tokens=3", "--tasks=STU") == 0
    assert json.loads(out.read_text())["scores"]["tasks"].keys() == {"STU"}

    lvb = tmp_path / "lvb.json"
    items = [{"id": "a0", "video_id": "a", "question": "Q?", "candidates": ["x", "y"], "correct_choice": 1}]
    lvb.write_text(json.dumps(items))
    assert run_mcq(tiny_dir, videos, lvb, tmp_path / "l.json", "--mode", "offline", "--max-seconds", 2) == 0
    (row,) = [r for _, r in read_jsonl(tmp_path / "l.items.jsonl")]
    assert row["watched_s"] == 2 and row["answer"] == "B" and row["time"] is None
    report = json.loads((tmp_path / "l.json").read_text())
    assert report["format"] == "lvb" and report["scores"]["n"] == 1

    missing = tmp_path / "none.json"
    missing.write_text(json.dumps([{**items[0], "video_id": "zzz"}]))
    assert run_mcq(tiny_dir, videos, missing, tmp_path / "n.json") == 2
