"""ROS-free conversions between ROS 2 messages and the project's arrays (see ``messages``)."""
