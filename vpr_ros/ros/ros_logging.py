"""The core's `logging` records (logger "vpr_ros") on the node's ROS logger, hence /rosout."""

import logging


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
