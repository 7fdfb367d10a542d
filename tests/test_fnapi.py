"""The harness change of transforms/fnapi.py on Beam's own state context: a bundle's
state writes are the same requests as Beam sends, all sent before the first wait."""

from __future__ import annotations

from apache_beam.coders import PickleCoder, StrUtf8Coder
from apache_beam.runners.worker import bundle_processor as bp
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.fnapi import pipeline_state_commits

LEAD = ReadModifyWriteStateSpec("lead", PickleCoder())
SEEN = BagStateSpec("seen", StrUtf8Coder())


class Channel:
    """A state channel that records requests and the waits on them, in order."""

    def __init__(self):
        self.log = []

    def _future(self, request):
        self.log.append(("send",) + request)
        log = self.log

        class Future:
            def get(self):
                log.append(("wait",) + request)
        return Future()

    def clear(self, key):
        return self._future(("clear", key.SerializeToString()))

    def extend(self, key, coder_impl, elements):
        return self._future(("extend", key.SerializeToString(),
                             tuple(coder_impl.encode(e) for e in elements)))


def _bundle(commit, writes):
    """Run `writes` [(kind, key, value)] through one state context; the channel's log."""
    channel = Channel()
    context = bp.FnApiUserStateContext(channel, "evaluate", StrUtf8Coder(),
                                       GlobalWindows().get_window_coder())
    window = GlobalWindow()
    for kind, key, value in writes:
        if kind == "write":
            context.get_state(LEAD, key, window).write(value)
        elif kind == "clear":
            context.get_state(LEAD, key, window).clear()
        else:
            context.get_state(SEEN, key, window).add(value)
    commit(context)
    return channel.log


WRITES = st.lists(st.tuples(st.sampled_from(["write", "clear", "add"]),
                            st.sampled_from([f"t/lead-{i}" for i in range(6)]),
                            st.text(max_size=5)), max_size=25)


@settings(max_examples=60, deadline=None)
@given(WRITES)
def test_same_requests_as_beam_sent_before_any_wait(writes):
    pipeline_state_commits()  # in this process already, when a job ran in it
    ours = _bundle(bp.FnApiUserStateContext.commit, writes)
    beams = _bundle(bp.FnApiUserStateContext.commit.beams, writes)
    sent = [entry[1:] for entry in ours if entry[0] == "send"]
    # the same requests, in the same order (a cell's clear before its append)
    assert sent == [entry[1:] for entry in beams if entry[0] == "send"]
    # every request sent before the first wait, and each cell's last request awaited
    first_wait = next((i for i, entry in enumerate(ours) if entry[0] == "wait"), len(ours))
    assert all(entry[0] == "send" for entry in ours[:first_wait])
    assert all(entry[0] == "wait" for entry in ours[first_wait:])
    assert {e[1:] for e in ours if e[0] == "wait"} == {e[1:] for e in beams if e[0] == "wait"}


def test_installed_once():
    pipeline_state_commits()
    installed = bp.FnApiUserStateContext.commit
    pipeline_state_commits()
    assert bp.FnApiUserStateContext.commit is installed
    assert installed.beams is not installed and not hasattr(installed.beams, "beams")
