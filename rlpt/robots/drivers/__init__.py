"""Robot drivers: ``sim`` (rlpt's MuJoCo tabletop), ``remote`` (a robot-side server and its client) and
vendor drivers ``franka`` (franky-control), ``ur`` (ur-rtde) and ``dynamixel`` (dynamixel-sdk), each an
optional import. See `rlpt.robots.drivers.base` for the `RobotDriver` protocol."""

from rlpt.robots.drivers.base import (
    DRIVERS,
    BaseDriver,
    Command,
    RobotDriver,
    RobotObservation,
    driver_class,
    make_driver,
)

__all__ = ["DRIVERS", "BaseDriver", "Command", "RobotDriver", "RobotObservation", "driver_class", "make_driver"]
