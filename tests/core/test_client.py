import pytest

from consortium.core import ClientApp, ClientContext, Message, UnknownMessageKind


def test_handlers_are_dispatched_by_kind():
    app = ClientApp()

    @app.on("train")
    def train(msg, ctx):
        ctx.state["calls"] = ctx.state.get("calls", 0) + 1
        return msg.reply(metrics={"id": ctx.client_id})

    @app.on("evaluate")
    def evaluate(msg, ctx):
        return msg.reply(metrics={"acc": 1.0})

    ctx = ClientContext(client_id=3, data=None)
    assert app.kinds == ("train", "evaluate")
    assert app.handle(Message("train"), ctx).metrics == {"id": 3.0}
    assert app.handle(Message("evaluate"), ctx).metrics == {"acc": 1.0}
    assert ctx.state == {"calls": 1}
    assert (ctx.round, ctx.seed) == (0, 0)


def test_unknown_kind_and_duplicate_handler_are_clear_errors():
    app = ClientApp()
    app.on("train")(lambda msg, ctx: msg.reply())
    app.on("explain")(lambda msg, ctx: msg.reply())
    with pytest.raises(
        UnknownMessageKind, match=r"no handler for message kind 'fly' \(known: train, explain\)"
    ):
        app.handle(Message("fly"), ClientContext(0, None))
    with pytest.raises(ValueError, match=r"^a handler for 'train' is already registered$"):
        app.on("train")(lambda msg, ctx: msg.reply())
