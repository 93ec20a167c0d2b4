"""Shared by the bad-input campaign and the fault tests: the vehicle service's books, and a
case-count table printed at the end of a pytest session."""

from v2x_vlm_ros.runtime.vehicle import VehicleService

#: Every counted way an ego / roadside frame leaves the service without being planned.
EGO_DROPS = ("ego_superseded", "ego_out_of_order", "ego_duplicate_stamp", "ego_from_the_future",
             "ego_queue_full", "ego_clock_reset_discarded", "ego_too_old", "ego_undecodable", "plan_failed")
ROAD_DROPS = ("roadside_out_of_order", "roadside_duplicate_stamp", "roadside_from_the_future",
              "roadside_queue_full", "roadside_clock_reset_discarded", "roadside_undecodable",
              "roadside_canvas_too_large", "roadside_blank")


def check_accounting(svc: VehicleService) -> None:
    """Bounded queues, and every frame that came in is planned, still queued, or counted."""
    depth = svc.config.queue_depth
    assert len(svc.ego.frames) <= depth and len(svc.roadside.frames) <= depth
    assert len(svc.latencies) <= svc.config.latency_window
    counts, drops = svc.counts, svc.drops
    ego_out = counts["plans_out"] + sum(drops[k] for k in EGO_DROPS) + len(svc.ego.frames)
    assert counts["ego_frames_in"] == ego_out, svc.diagnostics()
    road_out = sum(drops[k] for k in ROAD_DROPS) + len(svc.roadside.frames)
    assert counts["roadside_frames_in"] == road_out, svc.diagnostics()


class SummaryTable:
    """A pytest plugin printing ``render()``'s lines under ``title`` in the terminal summary
    (plain ``pytest -q`` output too)."""

    def __init__(self, title: str, render):
        self.title = title
        self.render = render

    def pytest_terminal_summary(self, terminalreporter):
        lines = self.render()
        if lines:
            terminalreporter.section(self.title, sep="-")
            for line in lines:
                terminalreporter.write_line(line)


def register_summary(config, name: str, title: str, render) -> None:
    """Register once per session (a module-scoped fixture calls this)."""
    if not config.pluginmanager.has_plugin(name):
        config.pluginmanager.register(SummaryTable(title, render), name)
