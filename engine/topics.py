"""Topic names, derived once from the configured prefix."""

from __future__ import annotations

from dataclasses import dataclass

from engine.priority import ALL_CHANNELS, Priority


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Every Kafka topic Herald reads or writes."""

    prefix: str

    def request(self, priority: Priority | str) -> str:
        """``<prefix>requests.<priority>``: commands from producers and the API."""
        return f"{self.prefix}requests.{Priority(priority).value}"

    @property
    def requests(self) -> tuple[str, ...]:
        """All request topics, highest priority first."""
        return tuple(self.request(p) for p in Priority)

    @property
    def events(self) -> str:
        """The event log, source of truth (infinite retention)."""
        return f"{self.prefix}events"

    def delivery(self, channel: str) -> str:
        """Work for one channel's sink agent."""
        return f"{self.prefix}deliveries.{channel}"

    @property
    def deliveries(self) -> tuple[str, ...]:
        """All delivery topics."""
        return tuple(self.delivery(c) for c in ALL_CHANNELS)

    @property
    def deadletter(self) -> str:
        """Raw records that could not be decoded or validated, with the reason in headers."""
        return f"{self.prefix}deadletter"

    @property
    def scheduled(self) -> str:
        """Delayed delivery work (retries, ``deliver_after``, fallbacks), its cancellations and scheduler ticks."""
        return f"{self.prefix}scheduled"

    @property
    def all(self) -> tuple[str, ...]:
        """Every topic, for creation at start-up."""
        return (*self.requests, self.events, *self.deliveries, self.deadletter, self.scheduled)


def worker_group(app_id: str, priorities: tuple[str, ...] | list[str]) -> str:
    """The consumer group (Faust app id) of a worker ingesting ``priorities``.

    The worker that ingests ``low`` runs the sinks and keeps ``app_id``; a worker of a subset
    without ``low`` gets the id suffixed with its priorities in canonical order (``herald-high``).
    """
    chosen = [p.value for p in Priority if p.value in priorities]
    if Priority.LOW.value in chosen:
        return app_id
    return "-".join((app_id, *chosen))


def groups_ingesting(app_id: str, priority: str) -> set[str]:
    """Every consumer group a worker ingesting ``priority`` could have, whatever its other priorities."""
    others = [p.value for p in Priority if p.value != priority]
    subsets: list[list[str]] = [[], [others[0]], [others[1]], others]
    return {worker_group(app_id, [priority, *s]) for s in subsets}


def worker_groups(app_id: str) -> set[str]:
    """Every consumer group any worker of the deployment could have (``app_id`` among them)."""
    return {group for p in Priority for group in groups_ingesting(app_id, p.value)}
