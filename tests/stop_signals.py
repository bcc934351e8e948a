"""A stop signal for tests that interrupt training part-way through an epoch."""

from __future__ import annotations

from review_nlp.models.training import StopSignal


class StopAfter(StopSignal):
    """A stop request that arrives after `polls` polls. Training polls once per mini-batch."""

    def __init__(self, polls: int):
        super().__init__()
        self.polls = polls

    def requested(self) -> bool:
        self.polls -= 1
        return self.polls < 0
