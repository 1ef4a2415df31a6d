"""What one worker process knows of the others (serving/workers.py): every worker's state,
in memory the supervisor shares with all of them."""

from collections.abc import MutableSequence
from dataclasses import dataclass
from multiprocessing.queues import SimpleQueue


@dataclass(frozen=True)
class WorkerShare:
    """What one worker knows of the others: whose slot is which, and every worker's state."""

    index: int
    count: int
    serving: MutableSequence[int]  # a shared ctypes array: 1 where that worker serves
    reports: SimpleQueue  # to the supervisor: ("started" | "failed", index, details)

    def mark(self, serving: bool) -> None:
        self.serving[self.index] = int(serving)

    def all_serving(self) -> bool:
        return all(self.serving[:])

    @property
    def name(self) -> str:
        return f"worker-{self.index}"
