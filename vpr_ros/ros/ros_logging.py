"""The core's `logging` records (logger "vpr_ros") on the node's ROS logger, hence /rosout; and callbacks
whose exceptions are logged and counted instead of ending the executor."""

import logging


def guarded(node, health, callback):
    """`callback` that logs and counts an exception (health's "errors") instead of letting it end the
    executor; quiet once the node's context is shutting down (a timer may fire after it)."""
    def run(*args):
        try:
            return callback(*args)
        except Exception as exc:
            if not node.context.ok():
                return None
            health.count("errors")
            node.get_logger().error(f"{callback.__name__} failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0)
            return None
    run.__name__ = callback.__name__
    return run


class RosoutHandler(logging.Handler):
    """Forwards the core's `logging` records (logger "vpr_ros") to the node's logger, hence /rosout."""

    def __init__(self, ros_logger):
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            elif record.levelno >= logging.INFO:
                self.ros_logger.info(text)
            else:
                self.ros_logger.debug(text)
        except Exception:  # a log line must never break the caller (e.g. after the context is gone)
            pass
