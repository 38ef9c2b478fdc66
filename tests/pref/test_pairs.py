"""pref_download loaders: HH transcripts (incl. the real shared split), UltraFeedback,
stack exchange, legacy/normalized local files, CHAMP grading, ids, caps, errors."""

import gzip
import hashlib
import json

import pytest

from posttrain.core.io import DataError
from posttrain.pref.pairs import (DownloadSettings, Skip, champ_problem_to_pairs, collect, grade_final_answer, hh_row_to_pair,
                             load_source, messages_row_to_pair, parse_hh_transcript, prefix_id,
                             stack_exchange_row_to_pairs)

HH_ROW = {
    "chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Flour, water, yeast.\n\nHuman: And then?"
              "\n\nAssistant: Knead and bake at 230C.",
    "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: Flour, water, yeast.\n\nHuman: And then?"
                "\n\nAssistant: Buy some.",
}


def test_prefix_id_is_md5_of_first_user_message():
    msgs = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "héllo"},
            {"role": "assistant", "content": "hi"}, {"role": "user", "content": "again"}]
    want = hashlib.md5("héllo".encode("utf-8")).hexdigest()[:16]
    assert prefix_id(msgs) == want
    assert prefix_id({"messages": msgs}) == want
    assert prefix_id({"id": "x", "prefix": {"messages": msgs}}) == want
    assert prefix_id(msgs[:2]) == want  # later turns do not matter


def test_parse_hh_multi_turn():
    msgs = parse_hh_transcript(HH_ROW["chosen"])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert msgs[2]["content"] == "And then?"
    with pytest.raises(ValueError):
        parse_hh_transcript("no markers at all")


def test_hh_row_to_pair_and_deterministic_id():
    p = hh_row_to_pair(HH_ROW, "hh-rlhf")
    assert p["prefix"]["messages"][-1] == {"role": "user", "content": "And then?"}
    assert len(p["prefix"]["messages"]) == 3
    assert (p["chosen"], p["rejected"]) == ("Knead and bake at 230C.", "Buy some.")
    assert hh_row_to_pair(dict(HH_ROW), "other")["id"] == p["id"]  # content id, source-free
    swapped = hh_row_to_pair({"chosen": HH_ROW["rejected"], "rejected": HH_ROW["chosen"]}, "hh-rlhf")
    assert swapped["id"] != p["id"]


def test_hh_prefix_mismatch_and_identical_are_skips():
    bad = {"chosen": HH_ROW["chosen"], "rejected": HH_ROW["rejected"].replace("And then?", "Then?")}
    with pytest.raises(Skip) as e:
        hh_row_to_pair(bad, "hh")
    assert e.value.reason == "prefix_mismatch"
    with pytest.raises(Skip) as e:
        hh_row_to_pair({"chosen": HH_ROW["chosen"], "rejected": HH_ROW["chosen"]}, "hh")
    assert e.value.reason == "identical_answers"


def test_hh_non_string_transcript_is_an_error_naming_the_field():
    # hub rows reach hh_row_to_pair without detect_format: a null must still name its field
    with pytest.raises(TypeError, match="^rejected: expected a transcript string, got NoneType"):
        hh_row_to_pair({"chosen": HH_ROW["chosen"], "rejected": None}, "hh")


def test_real_hh_split_every_row_accounted(shared_data):
    path = shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    pairs, stats = load_source(f"path:{path}", cap=0)
    s = stats.as_dict()
    assert s["rows"] == 2312
    assert s["rows_with_pairs"] + s["skipped_total"] == 2312
    assert s["pairs"] == len(pairs) == s["rows_with_pairs"]
    # chosen and rejected transcripts that diverge before the final turn (e.g. a final
    # answer containing "\n\nAssistant:") are counted, not parsed
    assert s["skipped"].get("prefix_mismatch", 0) >= 1
    assert set(s["skipped"]) <= {"prefix_mismatch", "identical_answers", "duplicate_pair",
                                 "unparsable_transcript", "last_turn_not_assistant"}
    assert all(p["prefix"]["messages"][-1]["role"] == "user" for p in pairs)
    assert all(isinstance(p["chosen"], str) and p["chosen"] != p["rejected"] for p in pairs)
    assert len({p["id"] for p in pairs}) == len(pairs)
    assert max(len(p["prefix"]["messages"]) for p in pairs) > 3  # multi-turn prefixes kept
    again, _ = load_source(f"path:{path}", cap=0)
    assert [json.dumps(p, sort_keys=True) for p in again] == [json.dumps(p, sort_keys=True) for p in pairs]


UF_ROW = {  # HuggingFaceH4/ultrafeedback_binarized train_prefs shape
    "prompt": "Name a prime number.", "prompt_id": "abc123",
    "chosen": [{"content": "Name a prime number.", "role": "user"}, {"content": "7", "role": "assistant"}],
    "rejected": [{"content": "Name a prime number.", "role": "user"}, {"content": "9", "role": "assistant"}],
    "messages": [{"content": "Name a prime number.", "role": "user"}, {"content": "7", "role": "assistant"}],
    "score_chosen": 9.0, "score_rejected": 2.0,
}


def test_ultrafeedback_row():
    p = messages_row_to_pair(UF_ROW, "ultrafeedback-binarized")
    assert p["prefix"]["messages"] == [{"role": "user", "content": "Name a prime number."}]
    assert (p["chosen"], p["rejected"]) == ("7", "9")
    with pytest.raises(Skip, match="tied_scores"):
        messages_row_to_pair({**UF_ROW, "score_rejected": 9.0}, "uf")
    other = [{"content": "Another prompt", "role": "user"}, {"content": "9", "role": "assistant"}]
    with pytest.raises(Skip, match="prefix_mismatch"):
        messages_row_to_pair({**UF_ROW, "rejected": other}, "uf")


SE_ROW = {  # HuggingFaceH4/stack-exchange-preferences shape
    "qid": 42, "question": "<p>How do I reverse a list in Python?</p>", "date": "2011/01/01",
    "metadata": ["https://stackoverflow.com/questions/42"],
    "answers": [
        {"answer_id": 1, "author": "a", "author_id": 1, "author_profile": "", "pm_score": 2,
         "selected": False, "text": "<p>Use a loop.</p>"},
        {"answer_id": 2, "author": "b", "author_id": 2, "author_profile": "", "pm_score": 9,
         "selected": True, "text": "<p>Use reversed() or [::-1].</p>"},
        {"answer_id": 3, "author": "c", "author_id": 3, "author_profile": "", "pm_score": -1,
         "selected": False, "text": "<p>You cannot.</p>"},
        {"answer_id": 4, "author": "d", "author_id": 4, "author_profile": "", "pm_score": 9,
         "selected": False, "text": "<p>list.reverse()</p>"},
    ],
}


def test_stack_exchange_best_vs_lower_capped():
    pairs = stack_exchange_row_to_pairs(SE_ROW, "se", per_prompt=2)
    assert len(pairs) == 2
    assert all(p["chosen"] == "<p>Use reversed() or [::-1].</p>" for p in pairs)  # accepted breaks the tie
    assert [p["rejected"] for p in pairs] == ["<p>You cannot.</p>", "<p>Use a loop.</p>"]  # widest gap first
    assert len(stack_exchange_row_to_pairs(SE_ROW, "se", per_prompt=0)) == 2  # the tied 9 is not lower
    flat = {**SE_ROW, "answers": [dict(a, pm_score=3) for a in SE_ROW["answers"]]}
    with pytest.raises(Skip, match="no_score_gap"):
        stack_exchange_row_to_pairs(flat, "se", 4)
    with pytest.raises(Skip, match="too_few_answers"):
        stack_exchange_row_to_pairs({**SE_ROW, "answers": SE_ROW["answers"][:1]}, "se", 4)


def _write_jsonl_gz(path, rows):
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


def test_local_file_mixed_formats(tmp_path):
    normalized = {"prefix": {"messages": [{"role": "user", "content": "2+2?"}]}, "chosen": "4",
                  "rejected": "5", "src": "reason", "id": "ignored"}
    legacy_hh = {"prompt": "\n\nHuman: Hi there\n\nAssistant:", "chosen": " Hello!", "rejected": " Go away."}
    legacy = {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"}
    f = tmp_path / "mixed.jsonl.gz"
    _write_jsonl_gz(f, [HH_ROW, normalized, legacy_hh, legacy, UF_ROW, HH_ROW])
    pairs, m = collect([(f"path:{f}", 0)], DownloadSettings(per_prompt=4, seed=0))
    s = m["sources"][f"path:{f}"]
    assert s["rows"] == 6 and s["pairs"] == 5 and s["skipped"] == {"duplicate_pair": 1}
    by_first = {p["prefix"]["messages"][0]["content"]: p for p in pairs}
    assert by_first["2+2?"]["src"] == "reason"  # normalized records keep their source
    assert by_first["Hi there"]["prefix"]["messages"] == [{"role": "user", "content": "Hi there"}]
    assert by_first["Hi there"]["chosen"] == "Hello!"
    assert by_first["Capital of France?"]["rejected"] == "Lyon"


def test_cap_and_cross_source_duplicates(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(10)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for f in (a, b):
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs, m = collect([(f"path:{a}", 3), (f"path:{b}", 5)], DownloadSettings(per_prompt=4, seed=0))
    sa, sb = m["sources"][f"path:{a}"], m["sources"][f"path:{b}"]
    assert (sa["pairs"], sa["rows"], sa["capped"]) == (3, 3, True)
    # b re-reads q0..q2 (already kept from a: counted duplicates), then takes q3..q7
    assert (sb["pairs"], sb["skipped"], sb["rows"]) == (5, {"duplicate_pair": 3}, 8)
    assert [p["prefix"]["messages"][0]["content"] for p in pairs] == [f"q{i}" for i in range(8)]
    assert len({p["id"] for p in pairs}) == 8


def test_malformed_input_errors_name_file_line_field(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps(HH_ROW) + "\n{not json\n")
    with pytest.raises(DataError) as e:
        collect([(f"path:{f}", 0)], DownloadSettings(per_prompt=4, seed=0))
    assert e.value.line == 2 and "bad.jsonl" in str(e.value)
    g = tmp_path / "missing.jsonl"
    g.write_text(json.dumps(HH_ROW) + "\n" + json.dumps({"chosen": "\n\nHuman: x\n\nAssistant: y"}) + "\n")
    with pytest.raises(DataError) as e:
        collect([(f"path:{g}", 0)], DownloadSettings(per_prompt=4, seed=0))
    assert (e.value.line, e.value.field) == (2, "rejected")
    h = tmp_path / "shape.jsonl"
    h.write_text(json.dumps({**UF_ROW, "chosen": "not a list", "rejected": [1]}) + "\n")
    with pytest.raises(DataError) as e:
        collect([(f"path:{h}", 0)], DownloadSettings(per_prompt=4, seed=0))
    assert e.value.line == 1
    with pytest.raises(ValueError, match="unknown preference source"):
        collect([("no-such-source", 0)], DownloadSettings(per_prompt=4, seed=0))


@pytest.mark.parametrize("summary,gold,want", [
    ("The total number of such strings is 239.", "239", True),
    ("There are 1,000 of them.", "1000", True),
    ("The answer is 771.", "239", False),
    ("With n = 6 the count is 239, not 771.", "239", None),  # gold present but not last: ambiguous
    ("It cannot be determined.", "239", None),
    ("The limit is 1/18.", "1/18", True),
    ("No, such a sequence does not exist.", "No", True),
    ("Yes, it exists.", "No", False),
    ("The polynomial factors as (x+y+z)(x^2+y^2+z^2-xy-yz-xz).", "(x+y+z)(x^2+y^2+z^2-xy-yz-xz)", True),
    ("It factors as something else.", "(x+y+z)(x^2+y^2+z^2-xy-yz-xz)", None),
])
def test_grade_final_answer(summary, gold, want):
    assert grade_final_answer(summary, gold) is want


def _conv(model, solution, summary, error=None):
    return {"messages": [
        {"role": "System", "text": "You are an expert on mathematics.", "error": None},
        {"role": "User", "text": "Solve the following problem. Make sure to show your work before giving "
                                 "the final answer.\n\nWhat is 6*7?", "error": None},
        {"role": f"Model.{model}", "text": solution, "error": error},
        {"role": "User", "text": "Now, summarize the answer above in one sentence, without any "
                                 "intermediate steps or explanations.", "error": None},
        {"role": f"Model.{model}", "text": summary, "error": None}]}


def test_champ_problem_pairs_correct_vs_wrong():
    from collections import Counter
    problem = {  # the real CHAMP v0.json problem shape, abridged
        "identifier": "P_Test_1", "_text": "What is 6*7?", "_answer": "42", "category": "Test",
        "conversations": {
            "A|0-Shot": _conv("A", "6*7 = 42.", "The answer is 42."),
            "B|0-Shot": _conv("B", "6*7 = 48.", "The answer is 48."),
            "C|0-Shot": _conv("C", "6*7 = 36.", "The answer is 36."),
            "D|0-Shot": _conv("D", "6*7 = 4", "The answer is 4", error="LENGTH_CURRENT"),
            "E|0-Shot": _conv("E", "It is 42 by luck.", "The answer is 42."),
        },
        "fws_annotations": {"E|0-Shot": {"text": "It is 42 by luck.", "start_idx": 0, "end_idx": 5,
                                         "author": "E"}},
    }
    counts = Counter()
    pairs = champ_problem_to_pairs(problem, "champ", per_prompt=10, seed=0, counts=counts)
    assert {p["chosen"] for p in pairs} == {"6*7 = 42."}
    # the annotated first wrong step overrides the matching final answer
    assert {p["rejected"] for p in pairs} == {"6*7 = 48.", "6*7 = 36.", "It is 42 by luck."}
    assert counts["solution_truncated"] == 1 and counts["label_annotation"] == 1
    assert pairs[0]["prefix"]["messages"][0]["content"].endswith("What is 6*7?")
    assert len(champ_problem_to_pairs(problem, "champ", 2, 0, Counter())) == 2
    assert champ_problem_to_pairs(problem, "champ", 2, 0, Counter()) == \
        champ_problem_to_pairs(problem, "champ", 2, 0, Counter())


def test_champ_asset_source():
    pairs, stats = load_source("champ", cap=12, per_prompt=3, seed=0)
    s = stats.as_dict()
    assert len(pairs) == 12 and s["capped"]
    assert s["rows"] == s["rows_with_pairs"] + s["skipped_total"]
    assert all(p["src"] == "champ" and p["chosen"] != p["rejected"] for p in pairs)
    assert len({prefix_id(p) for p in pairs}) >= 4  # at most 3 pairs per problem


def test_content_parts_are_joined_and_bad_content_is_an_error_or_a_skip(tmp_path):
    parts = [{"type": "text", "text": "Name a prime."}, {"type": "text", "text": "Be brief."}]
    row = {"prompt": [{"role": "user", "content": parts}],
           "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "7"}]}],
           "rejected": [{"role": "assistant", "content": "8"}]}
    pair = messages_row_to_pair(row, "t")
    assert pair["prefix"]["messages"] == [{"role": "user", "content": "Name a prime.\nBe brief."}]
    assert (pair["chosen"], pair["rejected"]) == ("7", "8")
    image = {**row, "prompt": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}
    with pytest.raises(Skip, match="non_text_content"):
        messages_row_to_pair(image, "t")
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n"
                 + json.dumps({"prompt": None, "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(DataError, match=r"p\.jsonl, line 2: field 'prompt': expected a string .* got null"):
        load_source(f"path:{f}", cap=0)


def test_same_source_twice_is_refused(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(ValueError, match="more than once"):
        collect([(f"path:{f}", 0), (f"path:{f}", 0)], DownloadSettings(per_prompt=4, seed=0))
