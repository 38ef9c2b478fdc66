"""pref_prefixes: dedup by md5(first user message), map, stats."""

from posttrain.pref.pairs import make_pair, prefix_id
from posttrain.pref.prefixes import build_prefixes, write_id_map


def _pair(first, answer, src="s", extra=()):
    msgs = [{"role": "user", "content": first}, *extra]
    if extra:
        msgs.append({"role": "user", "content": "follow-up"})
    return make_pair(msgs, answer, answer + "!", src)


def test_dedup_keeps_first_prefix_and_counts(tmp_path):
    extra = ({"role": "assistant", "content": "sure"},)
    pairs = [_pair("a", "1"), _pair("b", "1", "t"), _pair("a", "2"), _pair("a", "3", extra=extra)]
    prefixes, id_map, stats = build_prefixes(pairs)
    assert [p["text"] for p in prefixes] == ["a", "b"]
    assert [p["n_pairs"] for p in prefixes] == [3, 1]
    assert prefixes[0]["prefix"] == pairs[0]["prefix"] and prefixes[0]["prefix_id"] == prefix_id(pairs[0])
    assert id_map == [(p["id"], prefix_id(p)) for p in pairs]
    assert stats["pairs"] == 4 and stats["unique_prefixes"] == 2
    assert stats["dedup_ratio"] == 0.5 and stats["prefix_variants_collapsed"] == 1
    assert stats["per_source"] == {"s": {"pairs": 3, "unique_prefixes": 1},
                                   "t": {"pairs": 1, "unique_prefixes": 1}}
    write_id_map(tmp_path / "m.tsv", id_map)
    lines = (tmp_path / "m.tsv").read_text().splitlines()
    assert lines[0] == "pair_id\tprefix_id" and lines[1] == f"{pairs[0]['id']}\t{prefix_id(pairs[0])}"


def test_empty():
    prefixes, id_map, stats = build_prefixes([])
    assert prefixes == [] and id_map == [] and stats["unique_prefixes"] == 0 and stats["dedup_ratio"] == 0.0
