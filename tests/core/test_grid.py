"""The grid's own contract: accounting, min_replies, rejections and failures with reasons."""

import logging

import numpy as np
import pytest

from consortium.core import Grid, MeanReply, Message, ReplySpec, RoundRecord, TooFewReplies


class ScriptedGrid(Grid):
    """A runtime whose members answer as scripted: a reply, an exception text, or silence."""

    def __init__(self, num_clients, answers=None, **kw):
        super().__init__(num_clients, **kw)
        self.answers = answers or {}
        self.exchanged = []

    def _exchange(self, messages):
        self.exchanged.append(sorted(messages))
        replies, failures = {}, {}
        for cid, msg in messages.items():
            answer = self.answers.get(cid, "echo")
            if answer == "echo":
                replies[cid] = msg.reply(arrays=msg.arrays, metrics={"n": 1.0})
            elif isinstance(answer, str):
                failures[cid] = answer
            else:
                replies[cid] = answer
        return replies, failures


W = {"w": np.zeros(4, np.float32)}


def train(arrays=W):
    return Message("train", arrays=dict(arrays))


def test_every_reply_is_accounted_for():
    nan = Message("train", arrays={"w": np.full(4, np.nan, np.float32)})
    grid = ScriptedGrid(5, answers={1: "timeout", 3: nan})
    grid.start_round(2)
    msgs = {c: train() for c in (0, 1, 3, 4)}
    replies = grid.send(msgs)
    assert sorted(replies) == [0, 4]
    rec = grid.record
    assert rec.sent == [0, 1, 3, 4]
    assert rec.replied == [0, 4]
    assert rec.failures == {1: "timeout"}
    assert rec.rejected == {3: "array 'w' holds NaN or Inf"}
    assert rec.bytes_down == {c: msgs[c].nbytes for c in (0, 1, 3, 4)}
    assert {c: rec.bytes_up[c] for c in (0, 4)} == {c: replies[c].nbytes for c in (0, 4)}
    assert set(rec.bytes_up) <= {0, 3, 4}  # what failed never came back
    assert rec.as_metrics() == {
        "clients_sent": 4,
        "replies": 2,
        "failures": {"1": "timeout"},
        "rejected": {"3": "array 'w' holds NaN or Inf"},
        "bytes_down": sum(rec.bytes_down.values()),
        "bytes_up": sum(rec.bytes_up.values()),
        "bytes_down_by_client": {str(c): msgs[c].nbytes for c in (0, 1, 3, 4)},
        "bytes_up_by_client": {str(c): n for c, n in sorted(rec.bytes_up.items())},
    }


def test_bytes_add_up_over_several_sends_in_one_round():
    grid = ScriptedGrid(3)
    grid.start_round(1)
    first = grid.send({0: train(), 2: train()})
    grid.send({2: train()})
    assert grid.record.bytes_down == {0: train().nbytes, 2: 2 * train().nbytes}
    assert grid.record.bytes_up == {0: first[0].nbytes, 2: 2 * first[2].nbytes}
    assert grid.record.sent == [0, 2, 2]
    assert grid.record.as_metrics()["clients_sent"] == 2  # distinct members asked
    assert grid.record.replied == [0, 2, 2]
    grid.start_round(2)
    assert grid.record == RoundRecord()


def test_failures_and_rejections_are_logged_with_round_member_and_reason(caplog):
    grid = ScriptedGrid(3, answers={0: "crashed", 1: Message("evaluate")})
    grid.start_round(4)
    with caplog.at_level(logging.WARNING, logger="consortium.grid"):
        grid.send({0: train(), 1: train(), 2: train()})
    assert caplog.messages == [
        "round 4: member 0 failed: crashed",
        "round 4: rejected reply of member 1: reply kind 'evaluate' does not answer 'train'",
    ]


def test_a_rejected_reply_does_not_stop_the_checks_of_later_ones():
    grid = ScriptedGrid(4, answers={0: {"not": "a message"}})
    replies = grid.send({c: train() for c in range(4)})
    assert sorted(replies) == [1, 2, 3]
    assert grid.record.rejected == {0: "reply is a dict, not a Message"}


def test_expect_as_spec_as_function_per_member_or_none():
    half = Message("train", arrays={"w": np.zeros(2, np.float32)})
    grid = ScriptedGrid(3, answers={1: half, 2: half})
    spec = ReplySpec.like(W)
    assert sorted(grid.send({c: train() for c in range(3)}, expect=spec)) == [0]
    assert grid.record.rejected == {
        1: "array 'w' has shape (2,), expected (4,)",
        2: "array 'w' has shape (2,), expected (4,)",
    }

    asked = []

    def per_member(cid):
        asked.append(cid)
        return ReplySpec.like(W, allow_smaller=cid == 1)

    grid.start_round(1)
    assert sorted(grid.send({c: train() for c in range(3)}, expect=per_member)) == [0, 1]
    assert asked == [0, 1, 2]
    grid.start_round(2)
    assert sorted(grid.send({c: train() for c in range(3)})) == [0, 1, 2]  # no spec: any shape


def test_max_reply_bytes_rejects_big_replies():
    big = Message("train", arrays={"w": np.zeros(1000, np.float32)})
    grid = ScriptedGrid(2, answers={1: big}, max_reply_bytes=500)
    assert grid.max_reply_bytes == 500
    assert sorted(grid.send({0: train(), 1: train()})) == [0]
    assert grid.record.rejected == {1: f"reply of {big.nbytes} bytes exceeds the limit of 500"}


def test_rejected_replies_count_in_bytes_up():
    big = Message("train", arrays={"w": np.zeros(1000, np.float32)})
    nan = Message("train", arrays={"w": np.full(4, np.nan, np.float32)})
    grid = ScriptedGrid(3, answers={1: big, 2: nan}, max_reply_bytes=500)
    grid.send({c: train() for c in range(3)})
    assert grid.record.bytes_up[1] == big.nbytes
    assert grid.record.bytes_up[2] == nan.nbytes


def test_unknown_members_are_a_key_error():
    grid = ScriptedGrid(3)
    for bad in (3, -1, 100):
        with pytest.raises(KeyError, match=rf"no such members: \[{bad}\]"):
            grid.send({bad: train()})
    with pytest.raises(KeyError, match=r"no such members: \[3, 4, 5, 6, 7\]"):
        grid.send({c: train() for c in range(9)})
    assert grid.exchanged == [] and grid.record.sent == []
    grid.send({2: train()})  # the last member is a member


@pytest.mark.parametrize(
    ("min_replies", "good", "raises"),
    [
        (0, 0, False),  # accept a round with no reply at all
        (1, 0, True),
        (1, 1, False),
        (2, 1, True),
        (2, 2, False),
        (5, 3, False),  # above the number asked: all of them suffice
        (5, 2, True),
    ],
)
def test_min_replies(min_replies, good, raises):
    answers = {c: "down" for c in range(good, 3)}
    grid = ScriptedGrid(6, answers=answers, min_replies=min_replies)
    grid.start_round(7)
    msgs = {c: train() for c in range(3)}
    if raises:
        with pytest.raises(TooFewReplies) as err:
            grid.send(msgs)
        assert str(err.value) == (
            f"round 7: {good} valid replies of 3, fewer than min_replies={min_replies}"
        )
        assert len(grid.record.failures) == 3 - good  # recorded before raising
    else:
        assert len(grid.send(msgs)) == good


def test_defaults_and_bad_construction():
    grid = ScriptedGrid(2, answers={1: "down"})
    assert (grid.seed, grid.min_replies, grid.max_reply_bytes, grid.round) == (0, 1, None, 0)
    assert grid.record == RoundRecord() and grid.client_ids == [0, 1]
    assert grid.send({0: train(), 1: train()}).keys() == {0}  # one of two: enough by default
    with pytest.raises(TooFewReplies):
        grid.send({1: train()})
    assert ScriptedGrid(1).num_clients == 1
    with pytest.raises(ValueError, match=r"^a federation needs at least one member, got 0$"):
        ScriptedGrid(0)
    with pytest.raises(ValueError, match=r"^min_replies must be >= 0, got -1$"):
        ScriptedGrid(3, min_replies=-1)
    assert ScriptedGrid(3, min_replies=0).min_replies == 0
    assert ScriptedGrid(3, min_replies=10).min_replies == 10
    assert ScriptedGrid(3).state_dict() == {}


def test_sampling_and_member_seeds_are_pinned():
    # pinned like derive_seed: a resumed run must draw what the interrupted one drew
    grid = ScriptedGrid(10, seed=3)
    grid.start_round(1)
    assert grid.sample(3) == [0, 1, 3]
    assert grid.sample(0.5, "dropout") == [0, 1, 6, 7, 8]
    assert grid.client_seed(4) == 6671440954130189967
    fresh = ScriptedGrid(10)
    assert fresh.sample(4) == [0, 4, 5, 7]
    assert fresh.client_seed(2) == 634384561005476967
    # each part of the name matters
    seeds = {grid.client_seed(c) for c in range(10)}
    grid.start_round(2)
    seeds |= {grid.client_seed(c) for c in range(10)}
    assert len(seeds) == 20


# --- the mean of the replies, and the grid's hooks ------------------------------------------


class Scaling(ScriptedGrid):
    """Member ``c`` answers the sent arrays times ``c + 1``, reporting ``examples[c]`` samples
    (no metric at all where ``examples`` has no entry); ``answers`` overrides as above."""

    def __init__(self, num_clients, examples=None, **kw):
        super().__init__(num_clients, **kw)
        self.examples = examples or {}

    def _exchange(self, messages):
        replies, failures = super()._exchange(messages)
        for cid, msg in messages.items():
            if self.answers.get(cid, "echo") != "echo":
                continue
            metrics = {"loss": float(cid)}
            if cid in self.examples:
                metrics["num_examples"] = self.examples[cid]
            arrays = {k: v * (cid + 1) for k, v in msg.arrays.items()}
            replies[cid] = msg.reply(arrays=arrays, metrics=metrics)
        return replies, failures


ONES = {"w": np.ones(3, np.float32), "b": np.ones(1, np.float64)}


def test_send_mean_weighs_by_the_reported_sample_counts():
    grid = Scaling(3, examples={0: 1.0, 2: 3.0})
    out = grid.send_mean({0: train(ONES), 2: train(ONES)})
    np.testing.assert_allclose(out.arrays["w"], np.full(3, (1 * 1 + 3 * 3) / 4))
    np.testing.assert_allclose(out.arrays["b"], [2.5])
    assert out.arrays["w"].dtype == np.float32 and out.arrays["b"].dtype == np.float64
    assert out.weight == 4.0 and isinstance(out.weight, float)
    assert out.metrics == {
        0: {"loss": 0.0, "num_examples": 1.0},
        2: {"loss": 2.0, "num_examples": 3.0},
    }
    assert out.secure is False
    assert grid.record.replied == [0, 2]


def test_send_mean_unweighted_counts_every_member_once():
    grid = Scaling(3, examples={0: 1.0, 2: 3.0})
    out = grid.send_mean({0: train(ONES), 2: train(ONES)}, weighted=False)
    np.testing.assert_allclose(out.arrays["w"], np.full(3, 2.0))
    assert out.weight == 2.0 and out.secure is False


def test_send_mean_caps_the_weights_as_send_does():
    class Declared(Scaling):
        def declared_size(self, client_id):
            return 1

    out = Declared(2, examples={0: 1.0, 1: 3.0}).send_mean({0: train(ONES), 1: train(ONES)})
    np.testing.assert_allclose(out.arrays["w"], np.full(3, 1.5))  # (1·1 + 1·2) / 2
    assert out.weight == 2.0 and out.metrics[1]["num_examples"] == 1.0


def test_send_mean_without_a_counted_reply_returns_the_sent_arrays():
    grid = Scaling(2)  # no member reports num_examples: weight 0 each
    msgs = {0: train(ONES), 1: train(ONES)}
    sent = msgs[0].arrays
    out = grid.send_mean(msgs)
    assert out.weight == 0.0 and set(out.arrays) == {"w", "b"}
    assert all(out.arrays[k] is sent[k] for k in sent)  # nothing averaged, nothing copied
    assert out.metrics == {0: {"loss": 0.0}, 1: {"loss": 1.0}}
    nobody = Scaling(2, answers={0: "down", 1: "down"}, min_replies=0)
    empty = nobody.send_mean({0: train(ONES), 1: train(ONES)})
    assert empty.weight == 0.0 and empty.metrics == {}
    assert all(empty.arrays[k] is ONES[k] for k in ONES)
    assert MeanReply({}, 0.0, {}).secure is False


def test_send_mean_checks_replies_against_what_was_sent_unless_told_otherwise():
    narrow = Message("train", arrays={"w": np.full(2, 9.0, np.float32), "b": np.ones(1)})
    narrow.metrics["num_examples"] = 1.0
    grid = Scaling(2, examples={0: 1.0}, answers={1: narrow})
    out = grid.send_mean({0: train(ONES), 1: train(ONES)})
    assert grid.record.rejected == {1: "array 'w' has shape (2,), expected (3,)"}
    np.testing.assert_allclose(out.arrays["w"], np.ones(3))
    assert out.weight == 1.0 and list(out.metrics) == [0]
    # a spec that admits narrower replies: the narrow one covers the leading entries
    grid = Scaling(2, examples={0: 1.0}, answers={1: narrow})
    out = grid.send_mean({0: train(ONES), 1: train(ONES)}, ReplySpec.like(ONES, allow_smaller=True))
    assert grid.record.rejected == {}
    np.testing.assert_allclose(out.arrays["w"], [5.0, 5.0, 1.0])
    assert out.weight == 2.0


def test_send_mean_needs_the_same_arrays_sent_to_everyone():
    grid = Scaling(2)
    other = {"w": np.zeros(3, np.float32), "b": np.ones(1)}
    with pytest.raises(ValueError, match="same arrays sent to every member"):
        grid.send_mean({0: train(ONES), 1: train(other)})
    assert grid.record.sent == []  # refused before anything was sent


def test_same_arrays():
    from consortium.core.grid import same_arrays

    assert same_arrays({}) == {}
    one = {"w": np.arange(3.0)}
    got = same_arrays({0: Message("t", one), 1: Message("t", one)})
    assert got == one and got is not one
    copies = {c: Message("t", {"w": np.arange(3.0)}) for c in range(3)}
    np.testing.assert_array_equal(same_arrays(copies)["w"], np.arange(3.0))
    nan = np.array([np.nan, 1.0])  # the very same array passes, though NaN != NaN
    assert same_arrays({0: Message("t", {"w": nan}), 1: Message("t", {"w": nan})})["w"] is nan
    bad = [
        {"w": np.array([0.0, 1.0, 3.0])},  # other values
        {"w": np.arange(4.0)},  # other shape
        {"w": np.arange(3.0), "b": np.zeros(1)},  # another name
        {"v": np.arange(3.0)},  # another name only
        {},
    ]
    for arrays in bad:
        with pytest.raises(ValueError, match=r"^a mean of replies needs the same arrays"):
            same_arrays({0: Message("t", {"w": np.arange(3.0)}), 5: Message("t", arrays)})
    # a single array broadcast against another shape is not the same either
    with pytest.raises(ValueError):
        same_arrays({0: Message("t", {"w": np.ones(3)}), 1: Message("t", {"w": np.ones(1)})})


def test_held_examples():
    from types import SimpleNamespace

    from consortium.core.grid import held_examples

    assert held_examples(SimpleNamespace(train_indices=[1, 2, 3], test_indices=[4])) == 4
    assert held_examples(SimpleNamespace(train_indices=[], test_indices=[])) == 0
    assert held_examples(SimpleNamespace(train_indices=[1])) is None
    assert held_examples(SimpleNamespace(test_indices=[1])) is None
    assert held_examples(SimpleNamespace(train_indices=None, test_indices=[1])) is None
    assert held_examples(None) is None


def test_sample_counts_are_capped_at_the_declared_size(caplog):
    from consortium.core.validation import SAMPLE_COUNTS

    class Declared(ScriptedGrid):
        def declared_size(self, client_id):
            return {0: 10, 1: 20}.get(client_id)

    counts = {name: 15.0 for name in SAMPLE_COUNTS}
    big = Message("train", metrics={**counts, "loss": 99.0})
    grid = Declared(3, answers={0: big, 1: big, 2: big})
    grid.start_round(6)
    with caplog.at_level(logging.WARNING, logger="consortium.grid"):
        replies = grid.send({c: train() for c in range(3)})
    assert replies[0].metrics == {**{n: 10.0 for n in SAMPLE_COUNTS}, "loss": 99.0}
    assert replies[1].metrics == {**counts, "loss": 99.0}  # 15 <= 20: left alone
    assert replies[2].metrics == {**counts, "loss": 99.0}  # size unknown
    assert big.metrics["num_examples"] == 15.0  # the member's own reply is not touched
    last = SAMPLE_COUNTS[-1]
    assert grid.record.capped == {0: f"{last} 15 capped at the member's 10 samples"}
    assert caplog.messages == [
        f"round 6: member 0: {n} 15 capped at the member's 10 samples" for n in SAMPLE_COUNTS
    ]
    assert grid.record.as_metrics()["capped"] == {"0": grid.record.capped[0]}
    assert "capped" not in RoundRecord().as_metrics()


def test_a_count_equal_to_the_declared_size_is_not_capped():
    class Declared(ScriptedGrid):
        def declared_size(self, client_id):
            return 15

    exact = Message("train", metrics={"num_examples": 15.0})
    grid = Declared(1, answers={0: exact})
    assert grid.send({0: train()})[0].metrics == {"num_examples": 15.0}
    assert grid.record.capped == {} and "capped" not in grid.record.as_metrics()
    assert ScriptedGrid(1).declared_size(0) is None


def test_tries_of_a_phase_are_numbered():
    grid = ScriptedGrid(2)
    assert grid.attempt == 0
    grid.start_round(3, 2)
    grid.record.sent.append(1)
    grid.retry()
    assert (grid.round, grid.attempt) == (3, 3)
    assert grid.record.sent == [1]  # a retry keeps what the earlier tries cost
    grid.start_round(4)
    assert (grid.round, grid.attempt) == (4, 0)


def test_progress_is_told_when_the_exchange_is_over():
    grid = ScriptedGrid(3, answers={1: "down"})
    grid.send({0: train()})  # nobody listens: fine
    seen = []
    grid.progress = lambda answered, asked: seen.append((answered, asked))
    grid.send({0: train(), 1: train(), 2: train()})
    assert seen == [(3, 3)]


def test_cpu_time_settings_and_close():
    import time

    grid = ScriptedGrid(2)
    before = time.process_time()
    sum(i * i for i in range(100_000))
    measured = grid.cpu_time()
    assert isinstance(measured, float) and before < measured <= time.process_time()
    assert grid.run_settings() == {}
    grid.close()
    grid.load_state_dict({"anything": 1})

    class Closing(ScriptedGrid):
        closed = 0

        def close(self):
            self.closed += 1

    with Closing(2) as g:
        assert isinstance(g, Closing) and g.closed == 0
        g.send({0: train()})
    assert g.closed == 1
    with pytest.raises(KeyError), Closing(1) as h:
        h.send({5: train()})
    assert h.closed == 1  # closed on the way out of an error too


def test_a_reply_whose_size_cannot_be_measured_counts_zero_bytes():
    unmeasurable = Message("train", arrays={"w": [1.0, 2.0]})  # a list has no nbytes
    grid = ScriptedGrid(3, answers={0: {"not": "a message"}, 1: unmeasurable})
    replies = grid.send({c: train() for c in range(3)})
    assert list(replies) == [2]
    assert grid.record.bytes_up[0] == 0 and grid.record.bytes_up[1] == 0
    assert grid.record.rejected[1] == "array 'w' is a list, not a numpy array"


def test_send_mean_of_a_single_unit_weight_is_that_reply():
    out = Scaling(2, examples={1: 1.0}).send_mean({1: train(ONES)})
    assert out.weight == 1.0
    np.testing.assert_array_equal(out.arrays["w"], np.full(3, 2.0, np.float32))
    half = Scaling(2, examples={1: 0.5}).send_mean({1: train(ONES)})
    assert half.weight == 0.5 and half.arrays["b"][0] == 2.0
