"""bench.datasets: loaders, their error messages, seeded sampling and the prompts."""
import json

import pytest

from bench.datasets import (
    DEFAULT_PATHS,
    PROMPTS,
    BenchItem,
    DatasetError,
    build_messages,
    demo_items,
    draw_demo_items,
    item_to_json,
    load_dataset,
    load_generic,
    load_gsm8k,
    load_items,
    load_squad,
    sample,
)

needs_shared_data = pytest.mark.skipif(
    not all(path.exists() for path in DEFAULT_PATHS.values()),
    reason="the shared data sets (../shared/data) are not beside this checkout",
)


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def squad_document(qas, context="Super Bowl 50 was won by the Denver Broncos."):
    return {"version": "1.1",
            "data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]}


# ---------------------------------------------------------------- GSM8K


def test_load_gsm8k_reads_question_gold_and_line_ids(tmp_path):
    path = write_lines(tmp_path / "g.jsonl", [
        json.dumps({"question": "2 + 2?", "answer": "2 + 2 = 4\n#### 4"}),
        "",
        json.dumps({"question": "How much?", "answer": "so\n#### 1,080"}),
    ])
    items = load_gsm8k(path)
    assert items == [
        BenchItem("gsm8k", "gsm8k-1", "2 + 2?", ("4",), None, "numeric"),
        BenchItem("gsm8k", "gsm8k-3", "How much?", ("1,080",), None, "numeric"),
    ]


def test_load_gsm8k_keeps_the_ids_of_the_file_a_subset_was_cut_from(tmp_path):
    path = write_lines(tmp_path / "g.jsonl", [
        json.dumps({"id": "gsm8k-81", "question": "2 + 2?", "answer": "#### 4"}),
        json.dumps({"question": "3 + 3?", "answer": "#### 6"}),
    ])
    assert [item.item_id for item in load_gsm8k(path)] == ["gsm8k-81", "gsm8k-2"]


@pytest.mark.parametrize(("lines", "problem"), [
    ([{"id": "gsm8k-2", "question": "q", "answer": "#### 4"}, {"question": "r", "answer": "#### 5"}],
     "id 'gsm8k-2' is used twice"),
    ([{"id": 7, "question": "q", "answer": "#### 4"}], "field 'id' must be a string"),
    ([{"id": " ", "question": "q", "answer": "#### 4"}], "field 'id' is empty"),
])
def test_load_gsm8k_refuses_an_id_that_cannot_name_one_item(tmp_path, lines, problem):
    path = write_lines(tmp_path / "g.jsonl", [json.dumps(line) for line in lines])
    with pytest.raises(DatasetError, match=problem):
        load_gsm8k(path)

@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"question": "q", "answer": "no marker 4"}', "no '####'"),
        ('{"question": "q"}', "missing field 'answer'"),
        ('{"question": 7, "answer": "#### 4"}', "field 'question' must be a string"),
        ('{"question": "q", "answer": "#### four"}', "not a number"),
        ('{"question": "q", "answer": "#### 4"', "bad JSON"),
        ('["q", "#### 4"]', "expected a JSON object"),
    ],
)
def test_load_gsm8k_names_file_line_and_problem(tmp_path, line, problem):
    good = json.dumps({"question": "q", "answer": "#### 1"})
    path = write_lines(tmp_path / "g.jsonl", [good, line])
    with pytest.raises(DatasetError) as caught:
        load_gsm8k(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:2: ")
    assert problem in message


# ---------------------------------------------------------------- SQuAD


def test_load_squad_reads_ids_context_and_distinct_golds(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(squad_document([{
        "id": "q1", "question": "Who won Super Bowl 50?",
        "answers": [{"text": "Denver Broncos", "answer_start": 30},
                    {"text": "Denver Broncos", "answer_start": 30},
                    {"text": "the Denver Broncos", "answer_start": 26}],
    }])), encoding="utf-8")
    [item] = load_squad(path)
    assert item == BenchItem("squad", "q1", "Who won Super Bowl 50?",
                             ("Denver Broncos", "the Denver Broncos"),
                             "Super Bowl 50 was won by the Denver Broncos.", "text")


@pytest.mark.parametrize(
    ("qa", "where", "problem"),
    [
        ({"id": "q1", "answers": [{"text": "x"}]}, "data[0].paragraphs[0].qas[0]",
         "missing field 'question'"),
        ({"id": "q1", "question": "q", "answers": []}, "data[0].paragraphs[0].qas[0]",
         "no gold answers"),
        ({"id": "q1", "question": "q", "answers": [{"text": 3}]},
         "data[0].paragraphs[0].qas[0].answers[0]", "field 'text' must be a string"),
        ({"id": "q1", "question": "q", "answers": "x"},
         "data[0].paragraphs[0].qas[0].answers", "expected a list"),
    ],
)
def test_load_squad_names_the_json_path_of_the_problem(tmp_path, qa, where, problem):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(squad_document([qa])), encoding="utf-8")
    with pytest.raises(DatasetError) as caught:
        load_squad(path)
    assert str(caught.value) == f"{path}:{where}: {caught.value.problem}"
    assert problem in caught.value.problem


def test_load_squad_bad_json_names_the_line(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"data": [\n  {"title": }\n]}', encoding="utf-8")
    with pytest.raises(DatasetError, match=r"s\.json:2: bad JSON"):
        load_squad(path)


# ---------------------------------------------------------------- generic JSONL


def test_load_generic_accepts_answer_or_answers_and_optional_fields(tmp_path):
    path = write_lines(tmp_path / "mine.jsonl", [
        json.dumps({"question": "Capital of France?", "answer": "Paris"}),
        json.dumps({"question": "Who?", "answers": ["Ada", "Ada Lovelace"], "context": "Ada ...",
                    "id": "x7"}),
        json.dumps({"question": "6 x 7?", "answer": "42"}),
        json.dumps({"question": "Year?", "answer": "1990", "scoring": "text"}),
    ])
    items = load_generic(path)
    assert [i.item_id for i in items] == ["mine-1", "x7", "mine-3", "mine-4"]
    assert {i.dataset for i in items} == {"mine"}
    assert items[1].golds == ("Ada", "Ada Lovelace")
    assert items[1].context == "Ada ..."
    assert [i.scoring for i in items] == ["text", "text", "numeric", "text"]


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"question": "q"}, "exactly one of 'answer' or 'answers'"),
        ({"question": "q", "answer": "a", "answers": ["a"]}, "exactly one of"),
        ({"question": "q", "answers": []}, "non-empty list"),
        ({"question": "q", "answers": ["a", 3]}, "non-empty strings only"),
        ({"question": "q", "answer": "a", "context": 5}, "'context' must be a string"),
        ({"question": "q", "answer": "a", "scoring": "fuzzy"}, "'scoring' must be"),
        ({"question": "q", "answer": "a", "scoring": "numeric"}, "numeric answers"),
        ({"answer": "a"}, "missing field 'question'"),
    ],
)
def test_load_generic_names_file_line_and_problem(tmp_path, record, problem):
    path = write_lines(tmp_path / "mine.jsonl", [json.dumps(record)])
    with pytest.raises(DatasetError) as caught:
        load_generic(path)
    assert str(caught.value).startswith(f"{path}:1: ")
    assert problem in str(caught.value)


def test_load_generic_refuses_a_repeated_id_naming_both_lines(tmp_path):
    path = write_lines(tmp_path / "mine.jsonl", [json.dumps({"id": 7, "question": "q1", "answer": "a"}),
                                                 json.dumps({"id": "8", "question": "q2", "answer": "b"}),
                                                 json.dumps({"id": "7", "question": "q3", "answer": "c"})])
    with pytest.raises(DatasetError, match=r"mine.jsonl:3: id '7' was already used on line 1"):
        load_generic(path)


# ---------------------------------------------------------------- specs, sampling, prompts


def test_load_dataset_dispatches_on_the_spec(tmp_path):
    gsm8k = write_lines(tmp_path / "g.jsonl", [json.dumps({"question": "q", "answer": "#### 1"})])
    generic = write_lines(tmp_path / "x.jsonl", [json.dumps({"question": "q", "answer": "a"})])
    assert load_dataset(f"gsm8k:{gsm8k}")[0].dataset == "gsm8k"
    assert load_dataset(f"jsonl:{generic}")[0].dataset == "x"
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("mmlu")
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("jsonl")


def make_items(count):
    return [BenchItem("d", f"d-{n}", f"q{n}", ("a",), None, "text") for n in range(count)]


def test_sample_is_seeded_and_nested():
    items = make_items(50)
    first = sample(items, limit=10, seed=3)
    assert first == sample(items, limit=10, seed=3)
    assert first != sample(items, limit=10, seed=4)
    assert sample(items, limit=20, seed=3)[:10] == first
    assert len(set(first)) == 10
    assert sorted(sample(items, limit=None, seed=3), key=lambda i: int(i.item_id[2:])) == items
    assert len(sample(items, limit=500, seed=3)) == 50
    assert sample(items, limit=0, seed=3) == []
    with pytest.raises(ValueError):
        sample(items, limit=-1, seed=3)


def test_build_messages_uses_the_recorded_templates():
    gsm8k = BenchItem("gsm8k", "gsm8k-1", "2 + 2?", ("4",), None, "numeric")
    squad = BenchItem("squad", "q1", "Who won?", ("Broncos",), "long passage", "text")
    with_passage = BenchItem("mine", "m1", "Who?", ("Ada",), "Ada wrote it.", "text")
    closed = BenchItem("mine", "m2", "Who?", ("Ada",), None, "text")
    for item in (gsm8k, squad, with_passage, closed):
        system, user = build_messages(item)
        assert system == {"role": "system", "content": "You are a helpful assistant."}
        assert user["role"] == "user"
    assert build_messages(gsm8k)[1]["content"] == (
        "2 + 2?\nSolve it step by step. On the last line write the final answer as "
        "'#### <number>'.")
    squad_turn = build_messages(squad)[1]["content"]
    assert squad_turn == ("Answer the question with a short phrase. Reply with the answer only.\n"
                          "Question: Who won?")
    assert "long passage" not in squad_turn  # closed book: the passage is for retrieval modes
    passage_turn = build_messages(with_passage)[1]["content"]
    assert passage_turn == PROMPTS["generic_with_passage"].format(question="Who?",
                                                                  context="Ada wrote it.")
    assert "Passage: Ada wrote it.\nQuestion: Who?" in passage_turn
    assert build_messages(closed)[1]["content"] == squad_turn.replace("Who won?", "Who?")


def test_build_messages_keeps_braces_in_questions():
    item = BenchItem("gsm8k", "gsm8k-1", "Is {x} a set?", ("1",), None, "numeric")
    assert build_messages(item)[1]["content"].startswith("Is {x} a set?\n")


@needs_shared_data
def test_shared_data_loads_whole():
    assert len(load_dataset("gsm8k")) == 7473
    assert len(load_dataset("squad")) == 4961


def test_the_built_in_demo_sample_is_a_fixed_mix_of_both_sets():
    items = demo_items()  # from the committed file: no ../shared needed
    assert [i.dataset for i in items] == ["gsm8k"] * 8 + ["squad"] * 24
    assert [i.scoring for i in items] == ["numeric"] * 8 + ["text"] * 24
    assert len({i.item_id for i in items}) == len(items)
    assert all(i.context for i in items if i.dataset == "squad")


@needs_shared_data
def test_the_built_in_demo_sample_is_what_its_seed_draws_from_the_shared_data():
    assert demo_items() == draw_demo_items()


def test_saved_items_round_trip_and_a_bad_one_names_its_line(tmp_path):
    items = [BenchItem("gsm8k", "gsm8k-7", "2 + 2?", ("4",), None, "numeric"),
             BenchItem("squad", "abc", "Who?", ("Ada", "Ada L."), "Ada wrote it.", "text")]
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(item_to_json(i)) + "\n" for i in items) + '{"dataset": "x"}\n')
    with pytest.raises(DatasetError, match=r"items.jsonl:3: field 'golds'"):
        load_items(path)
    path.write_text("".join(json.dumps(item_to_json(i)) + "\n" for i in items))
    assert load_items(path) == items


def test_a_missing_shared_data_set_says_where_it_looked_and_what_to_give(monkeypatch, tmp_path):
    import bench.datasets as datasets
    monkeypatch.setattr(datasets, "DEFAULT_PATHS", {"gsm8k": tmp_path / "nowhere.jsonl"})
    with pytest.raises(ValueError, match=r"nowhere.jsonl .*give its file as gsm8k:PATH"):
        load_dataset("gsm8k")
