"""FedRA from an experiment file, on a SpamAssassin-shaped fixture with a tiny encoder."""

import json

import pytest

pytest.importorskip("peft")

from consortium.cli import main


def corpus(root):
    groups = {"easy-ham-1": 12, "spam-1": 12, "easy-ham-2": 12, "spam-2": 12}
    for group, n in groups.items():
        folder = root / "package" / "data" / group
        folder.mkdir(parents=True)
        for i in range(n):
            word = "offer cash now" if group.startswith("spam") else "meeting notes attached"
            text = f"Subject: x\n\n{word} {i} " * 3
            (folder / f"{i:05d}.json").write_text(json.dumps({"group": group, "text": text}))
    return root


EXP = """
name = "fedra-tiny"
seed = 0
methods = ["fedra", "all_small"]
[data]
dataset = "spam_assassin"
path = "{path}"
num_clients = 4
partition = "groups"
min_size = 1
options = {{ max_tokens = 24, tokenizer = "bytes" }}
[train]
lr = 0.05
batch_size = 8
[federation]
rounds = 2
[fedra]
capacities = [3, 2, 1, 1]
backbone = "tiny"
lora_r = 2
lora_alpha = 4
[all_small]
capacities = [3, 2, 1, 1]
backbone = "tiny"
"""


def test_fedra_runs_from_a_toml_file(tmp_path):
    root = corpus(tmp_path / "spam")
    exp = tmp_path / "exp.toml"
    exp.write_text(EXP.format(path=root))
    out = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(out), "--no-progress"]) == 0
    fedra = json.loads((out / "fedra" / "summary.json").read_text())
    assert set(fedra["domain_accuracy"]) == {"0", "1"}
    assert fedra["global_blocks"] == 6
    small = json.loads((out / "all_small" / "summary.json").read_text())
    assert small["global_blocks"] == 1
    lines = [json.loads(x) for x in (out / "fedra" / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in lines if r["phase"] == "train"]
    assert [len(rounds[0]["allocation"][str(c)]) for c in range(4)] == [3, 2, 1, 1]
