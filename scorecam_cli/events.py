"""What a run reports per input, torch-free: the records of written maps and the event each input
ends in, and their tally for the summary line."""

from __future__ import annotations

from dataclasses import dataclass

NOT_FINITE = "the model gave NaN or infinite scores or maps for this input; nothing written"


@dataclass(frozen=True)
class MapRecord:
    """One written map: the files and what they explain."""

    input: str
    overlay: str
    npy: str
    heatmap: str | None
    class_index: int
    class_name: str | None
    probability: float
    model: str
    layer: str
    method: str
    forward_passes: int
    forward_passes_saved: int


@dataclass(frozen=True)
class Explained:
    """An input whose maps were all written: one record per target class."""

    input: str
    records: list[MapRecord]
    original_size: tuple[int, int] = (0, 0)  # (H, W) of the decoded input


@dataclass(frozen=True)
class Failure:
    """An input that produced no maps, and why (one line)."""

    input: str
    reason: str
    forward_passes: int = 0  # masked passes run for it before it failed (a write failed)
    forward_passes_saved: int = 0


@dataclass(frozen=True)
class Skipped:
    """An input whose outputs already exist (``skip_existing``)."""

    input: str


Event = Explained | Failure | Skipped


@dataclass
class RunTally:
    """Counts of a run's events, for its summary line and its exit code."""

    maps: int = 0
    failed: int = 0
    skipped: int = 0
    passes: int = 0  # masked forward passes run
    saved: int = 0  # masked forward passes saved by sharing identical masks

    def add(self, event: Event) -> None:
        if isinstance(event, Explained):
            self.maps += len(event.records)
            if event.records:  # every record of an input carries the input's pass counts
                self.passes += event.records[0].forward_passes
                self.saved += event.records[0].forward_passes_saved
        elif isinstance(event, Skipped):
            self.skipped += 1
        else:
            self.failed += 1
            self.passes += event.forward_passes
            self.saved += event.forward_passes_saved

    @property
    def inputs(self) -> int:
        """Inputs that came to an end: explained, failed or skipped."""
        return self.maps + self.failed + self.skipped

    def summary(self) -> str:
        return (
            f"{self.maps} maps written, {self.failed} inputs failed, {self.skipped} skipped; "
            f"masked forward passes: {self.passes} run, {self.saved} saved by sharing identical "
            "masks"
        )
