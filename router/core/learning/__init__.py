"""Learning from the ledger: every training set built from logged traffic, in one place.

    deferral.py       rows for the learned deferral model (train-arbiter) and PRE's router (train-router)
    training_sets.py  those rows merged with the labelled corpus, with the provenance meta.json records
    sft.py            SFT (OpenAI chat, ShareGPT) and DPO files (`hybrid-router export`)
    lora.py           the LoRA's training set (`hybrid-router finetune --ledger`, `hybrid-router improve`)
    evidence.py       what the logged signals say about an answer, for all of them

The ledger records; it does not train. These modules read it through its read API
(router/core/ledger/records.py), never its tables, and the ledger imports none of them.
Nothing is imported here, so a learner pulls in only what it uses.
"""
