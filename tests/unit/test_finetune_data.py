"""bench/finetune_data.py: held-out evaluation sets never share an item with a training set."""
import json

from bench.datasets import GSM8K, BenchItem, build_messages, load_gsm8k, split_of
from bench.finetune_data import eval_items, examples
from router.domain.config import InfoSettings


def gsm8k_items(count: int) -> list[BenchItem]:
    return [BenchItem(GSM8K, f"gsm8k-{n}", f"What is {n} + {n}?", (str(2 * n),), None, "numeric")
            for n in range(1, count + 1)]


def labelled(items, correct=True):
    return {(GSM8K, item.item_id): {"cloud_text": f"{item.golds[0]}\n#### {item.golds[0]}",
                                    "cloud_correct": correct} for item in items}


def test_maths_eval_set_loads_back_with_the_gsm8k_prompt_and_its_ids(tmp_path):
    items = gsm8k_items(60)
    test = [item for item in items if split_of(item) == "test"]
    assert len(test) >= 3, "the fixture needs test-split items"
    rows = labelled(test[:2])
    path = tmp_path / "maths-test.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in eval_items("maths", items, rows, "test")))
    loaded = load_gsm8k(path)
    assert [(item.item_id, item.question, item.golds) for item in loaded] == \
        [(item.item_id, item.question, item.golds) for item in test[:2]]
    assert build_messages(loaded[0]) == build_messages(test[0])


def test_unlabelled_items_come_from_the_split_only_and_after_the_labelled_ones():
    items = gsm8k_items(60)
    test = [item for item in items if split_of(item) == "test"]
    train = [item for item in items if split_of(item) == "train"]
    rows = {**labelled(test[2:3]), **labelled(train[1:])}  # train[0] is left unlabelled: it must not come in
    ids = [line["id"] for line in eval_items("maths", items, rows, "test", unlabelled=2)]
    assert ids == [test[2].item_id, test[0].item_id, test[1].item_id]
    trained_on = {example["messages"][1]["content"] for example in
                  examples("maths", items, rows, split="train", min_f1=0.8, info=InfoSettings())}
    assert trained_on and not trained_on & {build_messages(item)[1]["content"]
                                            for item in items if item.item_id in ids}


def test_passage_examples_are_asked_as_the_mixed_workload_asks_them_and_come_from_the_train_split_only():
    from bench.datasets import SQUAD_PASSAGE

    items = [BenchItem(SQUAD_PASSAGE, f"q{n}", f"Who came {n}th?", ("Ada",), f"Ada came {n}th in race {n}.", "text",
                       group=f"squad:Article {n}") for n in range(40)]
    rows = {(SQUAD_PASSAGE, item.item_id): {"cloud_text": "Ada", "cloud_f1": 1.0} for item in items}
    trained = list(examples("passage", items, rows, split="train", min_f1=0.8, info=InfoSettings()))
    train = [item for item in items if split_of(item) == "train"]
    assert 0 < len(trained) == len(train) < len(items)
    assert [example["messages"][:-1] for example in trained] == [build_messages(item) for item in train]
    assert all(example["messages"][-1] == {"role": "assistant", "content": "Ada"} for example in trained)
