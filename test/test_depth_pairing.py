"""Pairing frames with depth images of a separate stream (core/inputs/depth_pairing.py): what a frame that
waits in the queue needs is kept however fast the depth stream runs, a late depth image is waited for up to
the deadline, a dead stream is not, and the buffer stays bounded (issue 38, case 2)."""

import threading
import time

from vpr_ros.core.inputs.depth_pairing import DepthBuffer

MS = 1_000_000


def test_a_frame_waiting_behind_others_keeps_its_depth_while_a_30_hz_stream_runs_on():
    """The frame of t=0 waits 3 s in the queue while 90 more depth images arrive: a buffer of the last 30
    (be683cd) had dropped its depth; this one keeps it, and drops what no waiting frame needs."""
    buffer = DepthBuffer(50 * MS)
    buffer.expect(0)
    for i in range(91):
        buffer.add(i * 33 * MS, f"depth {i}")
    assert len(buffer) <= 30 + 3  # the newest 30 and what the waiting frame needs
    pairing = buffer.pair(0, time.monotonic())
    assert pairing.payload == "depth 0" and pairing.offset_s == 0.0
    buffer.release(0)
    assert len(buffer) <= 30


def test_a_depth_image_arriving_after_its_frame_is_waited_for_until_the_deadline():
    buffer = DepthBuffer(50 * MS)
    buffer.add(-100 * MS, "previous")
    buffer.expect(0)
    threading.Timer(0.15, buffer.add, args=(2 * MS, "late")).start()
    pairing = buffer.pair(0, time.monotonic() + 1.0)
    assert pairing.payload == "late" and 0.1 < pairing.waited_s < 0.9
    missed = buffer.pair(500 * MS, time.monotonic() + 0.05)  # nothing comes: the deadline ends the wait
    assert missed.payload is None and abs(missed.offset_s + 0.498) < 1e-9 and "0.498 s older" in missed.describe()


def test_a_newer_depth_image_or_a_silent_stream_ends_the_wait_at_once():
    buffer = DepthBuffer(50 * MS)
    buffer.add(300 * MS, "newer")
    start = time.monotonic()
    assert buffer.pair(0, start + 5.0).payload is None and time.monotonic() - start < 0.5
    stale = DepthBuffer(50 * MS)
    stale.add(0, "old")
    start = time.monotonic()
    assert stale.pair(10_000 * MS, start + 5.0).payload is None and time.monotonic() - start < 0.5
    never = DepthBuffer(50 * MS)
    start = time.monotonic()
    assert never.pair(0, start + 5.0).describe().startswith("no depth image held")
    assert time.monotonic() - start < 0.5


def test_dropped_frames_release_what_they_held():
    buffer = DepthBuffer(50 * MS, future=5)
    for stamp in (0, 100 * MS, 200 * MS):
        buffer.expect(stamp)
    for i in range(100):
        buffer.add(i * 10 * MS, i)
    held = len(buffer)
    for stamp in (0, 100 * MS, 200 * MS):
        buffer.release(stamp)
    assert len(buffer) == 5 < held


def test_a_frame_past_its_deadline_still_takes_a_depth_image_already_on_its_way():
    """The frame was matched for longer than depth_wait_s; its depth image had reached the process but the
    executor thread had not yet taken it (the processing thread held the GIL): it is paired all the same."""
    buffer = DepthBuffer(50 * MS)
    buffer.add(-800 * MS, "previous frame's")
    buffer.expect(0)
    threading.Timer(0.01, buffer.add, args=(0, "own")).start()
    pairing = buffer.pair(0, time.monotonic() - 1.0)
    assert pairing.payload == "own" and pairing.waited_s < 0.04
