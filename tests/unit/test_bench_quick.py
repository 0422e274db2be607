"""`make run`'s smoke bench: a few items of each data set of the committed demo sample, in its order."""
from bench.__main__ import QUICK_ITEMS, QUICK_SPEC, _items, parse_args, quick_items
from bench.datasets import demo_items


def test_quick_takes_the_first_items_of_each_data_set_of_the_demo_sample() -> None:
    demo = demo_items()
    quick = quick_items()
    for dataset in {item.dataset for item in demo}:
        assert [i for i in quick if i.dataset == dataset] == [i for i in demo if i.dataset == dataset][:QUICK_ITEMS[dataset]]
    assert len(quick) == sum(QUICK_ITEMS.values()) == 4 < len(demo)


def test_the_flag_names_the_quick_sample_in_run_json() -> None:
    args = parse_args(["--quick", "--out", "x"])
    assert _items([QUICK_SPEC], limit=None, seed=0) == quick_items() and args.quick
