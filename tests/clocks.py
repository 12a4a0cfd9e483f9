"""A clock tests move by hand, for code that takes one (`clock: Callable[[], datetime]`)."""

import datetime as dt

from guanhao.clock import real_now


class StepClock:
    """Stands still until `advance` moves it, so what depends on time (leases, retries) happens when the test
    says, not when a sleep happens to end. With `follow_real_time` it also never falls behind the real clock
    (for rows other code stamps with the real time, such as a redelivery)."""

    def __init__(self, at: dt.datetime | None = None, *, follow_real_time: bool = False):
        self.follow_real_time = follow_real_time
        self.at = at or real_now()

    def __call__(self) -> dt.datetime:
        return max(self.at, real_now()) if self.follow_real_time else self.at

    def advance(self, seconds: float) -> dt.datetime:
        self.at = self() + dt.timedelta(seconds=seconds)
        return self.at

    def reset(self) -> None:
        self.at = real_now()
