"""rec_prepare's library: MovieLens loaders, Alpaca examples, the leak-free split."""

import filecmp
import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

from posttrain.rec import alpaca

from posttrain.rec import movielens
from posttrain.core.io import DataError, read_json, read_jsonl

REPO = Path(__file__).resolve().parents[2]

MOVIES = """movieId,title,genres
1,Toy Story (1995),Animation
2,Heat (1995),Action
3,"American President, The (1995)",Comedy
4,Babe (1995),Drama
5,Casino (1995),Crime
6,Se7en,Thriller
"""
# user 10: 5 ratings (written out of time order); user 20: 3 ratings (too few);
# user 30: 4 ratings, two with the same timestamp (file order breaks the tie).
RATINGS = """userId,movieId,rating,timestamp
10,3,5.0,300
10,1,4.0,100
10,2,2.5,200
10,5,3.5,500
10,4,4.0,400
20,1,5.0,10
20,2,5.0,20
20,3,5.0,30
30,6,1.0,50
30,5,4.5,60
30,4,3.0,60
30,1,4.0,70
"""


def write_ml_latest(folder: Path, ratings=RATINGS, movies=MOVIES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(ratings, encoding="utf-8")
    (folder / "movies.csv").write_text(movies, encoding="utf-8")
    return folder


def load_stage(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "stages" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_examples_counts_labels_and_input(tmp_path):
    df = movielens.load(str(write_ml_latest(tmp_path / "ml")))
    ex = alpaca.build_examples(df, history_len=3, rating_threshold=4.0)
    # user 10: ratings 4 and 5 are examples; user 20 has only 3 (not more than history_len); user 30: 1.
    assert [(e["user_id"], e["item_id"], e["output"]) for e in ex] == [
        ("10", "4", "Yes"), ("10", "5", "No"), ("30", "1", "Yes")]
    assert set(alpaca.alpaca_record(ex[0])) == {"instruction", "input", "output", "system", "history"}
    assert ex[0]["history"] == []
    assert ex[0]["input"] == (
        "Movies the user rated, oldest first:\n"
        "1. Toy Story (1995) (rating ≈ 4.0)\n"
        "2. Heat (1995) (rating ≈ 2.5)\n"
        "3. American President, The (1995) (rating ≈ 5.0)\n"
        "Candidate movie: Babe (1995)")
    # Tie at t=60: file order (Casino before Babe); a title without a year stays as is.
    assert ex[2]["input"].splitlines()[1:4] == [
        "1. Se7en (rating ≈ 1.0)", "2. Casino (1995) (rating ≈ 4.5)", "3. Babe (1995) (rating ≈ 3.0)"]


def test_threshold_is_inclusive(tmp_path):
    df = movielens.load(str(write_ml_latest(tmp_path / "ml")))
    ex = alpaca.build_examples(df, history_len=3, rating_threshold=3.5)
    assert [e["output"] for e in ex] == ["Yes", "Yes", "Yes"]


# 25 films, so each synthetic user rates distinct ones (a repeat would be a re-rating).
SYN_MOVIES = "movieId,title,genres\n" + "".join(f"{i},Film {i} ({1970 + i}),Drama\n" for i in range(1, 26))


def _synthetic(n_users=6, n_ratings=25):
    rows = ["userId,movieId,rating,timestamp"]
    for u in range(1, n_users + 1):
        for k in range(n_ratings):
            rows.append(f"{u},{(u * 7 + k) % 25 + 1},{(u + k) % 5 + 1}.0,{1000 + 10 * k + u}")
    return "\n".join(rows) + "\n"


def test_split_is_per_user_chronological_without_leakage(tmp_path):
    df = movielens.load(str(write_ml_latest(tmp_path / "ml", ratings=_synthetic(), movies=SYN_MOVIES)))
    ex = alpaca.build_examples(df, history_len=5, rating_threshold=4.0)
    splits = alpaca.split_examples(ex, val_ratio=0.1, test_ratio=0.2, seed=1)
    assert sum(len(v) for v in splits.values()) == len(ex) == 6 * 20
    assert [len(splits[s]) for s in ("train", "eval", "test")] == [6 * 14, 6 * 2, 6 * 4]
    alpaca.check_no_leakage(splits)
    for user in {e["user_id"] for e in ex}:
        test_times = [e["timestamp"] for e in splits["test"] if e["user_id"] == user]
        train_times = [e["timestamp"] for e in splits["train"] if e["user_id"] == user]
        assert max(train_times) < min(test_times)
        # No test target rating shows up in any train row of that user (history included).
        test_titles = {(e["title"], e["timestamp"]) for e in splits["test"] if e["user_id"] == user}
        assert not any(e["timestamp"] >= min(t for _, t in test_titles)
                       for e in splits["train"] if e["user_id"] == user)
    # The seed shuffles within splits only.
    other = alpaca.split_examples(ex, 0.1, 0.2, seed=2)
    assert {id(e) for e in other["test"]} == {id(e) for e in splits["test"]}
    assert [id(e) for e in other["train"]] != [id(e) for e in splits["train"]]


def test_rec_prepare_stage_is_deterministic(tmp_path):
    src = write_ml_latest(tmp_path / "ml", ratings=_synthetic(), movies=SYN_MOVIES)
    main = load_stage("rec_prepare").main
    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        res = CliRunner().invoke(main, ["--source", str(src), "--history-len", "5", "--rating-threshold", "4.0",
                                        "--val-ratio", "0.1",
                                        "--test-ratio", "0.2", "--seed", "3", "--out-dir", str(out),
                                        "--metrics", str(out / "m.json")], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        outs.append(out)
    for name in ("train.json", "eval.json", "test_raw.jsonl", "train_meta.jsonl", "m.json"):
        assert filecmp.cmp(outs[0] / name, outs[1] / name, shallow=False), name
    m = read_json(outs[0] / "m.json")
    assert m["examples"] == 120 and m["splits"]["test"]["n"] == 24
    assert m["splits"]["train"]["yes"] + m["splits"]["train"]["no"] == 84
    train = read_json(outs[0] / "train.json")
    assert all(set(r) == set(alpaca.ALPACA_KEYS) for r in train)
    meta = read_jsonl(outs[0] / "train_meta.jsonl")
    assert [("Yes" if m["label"] else "No") for m in meta] == [r["output"] for r in train]


def test_ml_latest_small_loads(shared_data):
    df = movielens.load(str(shared_data / "ml-latest-small"))
    assert len(df) == 100836 and df["user_id"].nunique() == 610
    assert df["rating"].between(0.5, 5.0).all()
    assert df.loc[(df.user_id == "1") & (df.item_id == "1"), "title"].item() == "Toy Story (1995)"


def test_packaged_ml100k_loads():
    df = movielens.load("ml-100k")
    assert len(df) == 100000 and df["user_id"].nunique() == 943
    assert set(df["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert "Toy Story (1995)" in set(df["title"])


def test_ml100k_raw_and_recbole_formats(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "u.item").write_bytes("1|Toy Story (1995)|01-Jan-1995||http://x|0|1\n2|Cité des enfants perdus, La (1995)|"
                                 "01-Jan-1995||http://y|0|1\n".encode("latin-1"))
    (raw / "u.data").write_text("7\t1\t5\t881250949\n7\t2\t3\t881250950\n")
    df = movielens.load(str(raw))
    assert df["title"].tolist() == ["Toy Story (1995)", "Cité des enfants perdus, La (1995)"]
    rb = tmp_path / "rb"
    rb.mkdir()
    (rb / "x.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\n"
                               "1\tUsual Suspects, The\t1995\n2\tunknown\tunknown\n")
    (rb / "x.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                "5\t1\t4\t10\n5\t2\t2\t11\n")
    df = movielens.load(str(rb))
    assert df["title"].tolist() == ["Usual Suspects, The (1995)", "unknown"]
    assert df["rating"].tolist() == [4.0, 2.0] and df["timestamp"].tolist() == [10, 11]


@pytest.mark.parametrize("ratings,movies,bad_file,line,field", [
    ("userId,movieId,timestamp\n1,1,5\n", MOVIES, "ratings.csv", 1, "rating"),  # missing column
    ("userId,movieId,rating,timestamp\n1,1,4.0,5\n1,2,great,6\n", MOVIES, "ratings.csv", 3, "rating"),
    ("userId,movieId,rating,timestamp\n1,1,4.0,5\n1,99,3.0,6\n", MOVIES, "ratings.csv", 3, "movieId"),
    ("", MOVIES, "ratings.csv", None, None),  # empty file
    ("userId,movieId,rating,timestamp\n", MOVIES, "ratings.csv", 2, None),  # header only
    (RATINGS, "", "movies.csv", None, None),
    ("userId,movieId,rating,timestamp\n1,1,4.0,soon\n", MOVIES, "ratings.csv", 2, "timestamp"),
])
def test_bad_input_names_file_row_and_field(tmp_path, ratings, movies, bad_file, line, field):
    folder = write_ml_latest(tmp_path / "ml", ratings=ratings, movies=movies)
    with pytest.raises(DataError) as err:
        movielens.load(str(folder))
    e = err.value
    assert e.path == str(folder / bad_file)
    assert e.line == line and e.field == field
    assert bad_file in str(e) and (line is None or f"line {line}" in str(e))


def test_unknown_source_is_a_clear_error():
    with pytest.raises(DataError, match="unknown MovieLens source"):
        movielens.load("no-such-dataset")


def test_rerating_keeps_the_latest_and_counts_the_rest(tmp_path):
    # user 10 rates movie 1 twice (100: 4.0, 600: 1.0) and has an exact duplicate row of movie 2.
    ratings = RATINGS + "10,1,1.0,600\n10,2,2.5,200\n"
    df = movielens.load(str(write_ml_latest(tmp_path / "ml", ratings=ratings)))
    assert df.attrs["duplicate_ratings_dropped"] == 2
    u10 = df[df.user_id == "10"].set_index("item_id")
    assert len(u10) == 5 and u10.at["1", "rating"] == 1.0 and u10.at["1", "timestamp"] == 600
    ex = alpaca.build_examples(df, history_len=3, rating_threshold=4.0)
    # the candidate's own earlier rating never appears in its history
    assert all(e["title"] not in e["input"].split("\n", 1)[1].rsplit("\n", 1)[0] for e in ex)


@pytest.mark.parametrize("threshold", [0.5, 7.0, -3.0, float("nan"), float("inf")])
def test_threshold_outside_the_star_scale_is_refused(threshold):
    with pytest.raises(ValueError, match="rating_threshold"):
        alpaca.check_params(history_len=3, rating_threshold=threshold)
