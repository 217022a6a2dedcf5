"""The managed-node lifecycle (rclpy's LifecycleNode, the convention Nav2's lifecycle_manager drives) of a
node that serves from something it loads: what each transition does and what a failure leaves.

configure builds (`_configure`, which raises the reason when it cannot): a failure is a failed transition,
logged and kept (`configure_error`) for /diagnostics, never a dead process. activate subscribes
(`_activate`); deactivate unsubscribes and stops processing, keeping what configure built
(`_stop_inputs`); cleanup releases it (`_release`); shutdown, from any state, releases everything and ends
the node's loop (`_finalize`). `start()` is autostart: configure then activate, raising the reason.
"""

from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from vpr_ros.core.map.store import MapError
from vpr_ros.ros.health import ERROR, OK

KNOWN = (ValueError, MapError, FileNotFoundError, ParameterException)  # their message is the whole reason


def reason(exc: BaseException) -> str:
    """An exception as the reason of a failed transition: its message, with the type where it says more."""
    return str(exc) if isinstance(exc, KNOWN) else f"{type(exc).__name__}: {exc}"


class ManagedNode(LifecycleNode):
    """The transitions around five hooks a subclass gives (module doc)."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name, **kwargs)
        self.lifecycle_state, self.configure_error, self._active = "unconfigured", None, False

    @property
    def active(self) -> bool:
        return self._active

    def start(self) -> None:
        """configure, then activate (autostart); raises the reason when configure fails."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise self.configure_error or RuntimeError("configure failed")
        if self.trigger_activate() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError("activate failed; see the log")

    def idle_status(self) -> tuple[int, str]:
        """The diagnostic level and message of the node while it is not active."""
        if self.configure_error is not None:
            return ERROR, f"unconfigured: configure failed: {reason(self.configure_error)}"
        if self.lifecycle_state == "inactive":
            return OK, "inactive (lifecycle): frames are not processed; the map stays loaded"
        return OK, f"{self.lifecycle_state} (lifecycle): no map loaded, frames are not processed"

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001: a failed transition, never a dead process
            self.configure_error = exc
            self._release()
            self.get_logger().error(f"configure failed: {reason(exc)}")
            return TransitionCallbackReturn.FAILURE
        self.configure_error, self.lifecycle_state = None, "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._activate()
        self._active, self.lifecycle_state = True, "active"
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self.lifecycle_state = "inactive"
        self.get_logger().info("inactive: frames are not processed; the map stays loaded")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: the map is released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle_state = "finalized"
        self.get_logger().info("shut down (lifecycle)")
        self._finalize()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().error(f"lifecycle error in state {state.label}: released; configure again")
        return TransitionCallbackReturn.SUCCESS

    # the hooks
    def _configure(self) -> None:
        raise NotImplementedError

    def _activate(self) -> None:
        raise NotImplementedError

    def _stop_inputs(self) -> None:
        """Stop processing (sets `_active` false) and unsubscribe."""
        raise NotImplementedError

    def _release(self) -> None:
        """Drop what configure built; back to unconfigured."""
        raise NotImplementedError

    def _finalize(self) -> None:
        raise NotImplementedError
