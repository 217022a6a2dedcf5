"""FrameQueue, between the thread that receives frames and the one processing loop: newest wins at
maxlen 1, first in first out above, drops counted, close() wakes a waiting reader. (FrameGate's tests
are in test_localizer.py and test_inputs.py.)"""

import threading
import time

from vpr_ros.core.inputs.gate import FrameQueue


def test_maxlen_one_keeps_only_the_newest_frame():
    queue = FrameQueue(1)
    assert [queue.put(i) for i in range(5)] == [0, 1, 1, 1, 1]
    assert len(queue) == 1 and queue.get(timeout=0) == 4 and queue.get(timeout=0) is None


def test_a_larger_queue_keeps_arrival_order_and_drops_the_oldest_when_full():
    queue = FrameQueue(3)
    dropped = sum(queue.put(i) for i in range(5))
    assert dropped == 2
    assert [queue.get(timeout=0) for _ in range(3)] == [2, 3, 4]
    assert queue.get(timeout=0) is None


def test_a_burst_below_the_limit_loses_nothing():
    queue = FrameQueue(100)
    assert sum(queue.put(i) for i in range(60)) == 0
    assert [queue.get(timeout=0) for _ in range(60)] == list(range(60))


def test_get_waits_for_a_frame_and_close_wakes_a_waiting_reader():
    queue = FrameQueue(1)
    threading.Timer(0.1, queue.put, args=("frame",)).start()
    assert queue.get(timeout=5.0) == "frame"
    start = time.monotonic()
    assert queue.get(timeout=0.2) is None and time.monotonic() - start >= 0.15  # nothing came: None after the timeout
    threading.Timer(0.1, queue.close).start()
    start = time.monotonic()
    assert queue.get(timeout=5.0) is None and time.monotonic() - start < 2.0
    assert queue.closed
    queue.put("late")
    assert queue.get(timeout=0) is None, "a closed queue hands out nothing"


def test_producers_and_one_consumer_keep_order_per_producer():
    queue = FrameQueue(1000)
    out = []

    def produce(name):
        for i in range(200):
            queue.put((name, i))

    threads = [threading.Thread(target=produce, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while (item := queue.get(timeout=0)) is not None:
        out.append(item)
    assert len(out) == 400
    for name in "ab":
        assert [i for n, i in out if n == name] == list(range(200))
