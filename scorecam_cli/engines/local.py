"""The local engine: decode -> core -> write in this process (no click, no Ray).

Images are decoded once, in DataLoader workers, explained in batches on the device, and rendered
and written by a background thread while the next batch runs, so the model does not wait on disk
and memory stays bounded by a few batches whatever the number of inputs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from scorecam_cli.cam import CamResult
from scorecam_cli.engines import EngineJob
from scorecam_cli.events import NOT_FINITE, Event, Failure
from scorecam_cli.explainer import Explainer, build_explainer
from scorecam_cli.images import InputImage, LoadedImage
from scorecam_cli.manifest import ManifestWriter
from scorecam_cli.spec import ExplainSpec
from scorecam_cli.stages import (
    StopRequest,
    accepted_inputs,
    decoded_batches,
    explain_parts,
    per_image,
    run_settings,
)
from scorecam_cli.writing import ManifestLines, RunOptions, write_image

__all__ = ["driver_explainer", "run"]

Batch = tuple[list[Event], list[LoadedImage], CamResult | None]  # events, decoded, their maps
Pending = tuple[list[Event], list[Future[Event]]]  # events known now, and those being written


def driver_explainer(spec: ExplainSpec) -> Explainer:
    """This process explains: the explainer on the spec's device."""
    return build_explainer(spec)


def run(
    job: EngineJob, inputs: Iterable[InputImage], stop: StopRequest | None = None
) -> Iterator[Event]:
    """Explain every input and write its outputs: one event per input, in input order.

    A bad input becomes a Failure event, never an exception, so the run goes on with the others.
    Every written map gets its manifest line (flushed by the writer thread just before the map's
    ``.npy``, its last file, so a killed run leaves no finished map unlisted) before its event.
    The run ends early when ``stop.requested`` turns true, when a KeyboardInterrupt arrives while
    a batch is explained (``stop.computing``), or after a failure with ``options.fail_fast``:
    then no new batch starts, the maps being written are finished, and every map written is
    still yielded before it returns.
    """
    explainer, options = job.explainer, job.options
    accepted = accepted_inputs(inputs, options, explainer)
    pending: deque[Pending] = deque()
    manifest = ManifestWriter(options.output_dir / options.manifest_name)
    lines = ManifestLines(manifest, run_settings(explainer, options))
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorecam-writer")
    failed = False
    stop = stop or StopRequest()

    def stopping() -> bool:
        return stop.requested or (options.fail_fast and failed)

    with manifest, writer:  # the writer thread finishes its lines before the manifest closes
        batches = _batches(accepted, explainer, options)
        try:
            while not stopping():
                stop.computing = True  # an interrupt here loses nothing: the batch is redone
                try:
                    batch = next(batches)
                except (StopIteration, KeyboardInterrupt):
                    break
                finally:
                    stop.computing = False
                pending.append(_submit(batch, explainer, options, writer, lines))
                while len(pending) > 1 and not stopping():  # one renders, the next computes
                    for event in _collect(pending.popleft()):
                        failed = failed or isinstance(event, Failure)
                        yield event
        finally:
            batches.close()
        # Stopping or done: finish what the writer started, drop what it did not, report all.
        for events, futures in pending:
            started = [f for f in futures if not (stopping() and f.cancel())]
            yield from _collect((events, started))


def _batches(
    accepted: Iterator[InputImage | Event],
    explainer: Explainer,
    options: RunOptions,
) -> Generator[Batch, None, None]:
    """Batches of decoded images with their maps; events for inputs that were not decoded or
    that the model failed on."""
    early: list[Event] = []

    def images() -> Iterator[InputImage]:
        for item in accepted:
            if isinstance(item, InputImage):
                yield item
            else:
                early.append(item)

    for failures, good, batch in decoded_batches(explainer, images(), options.decode):
        events: list[Event] = [*early, *failures]
        early.clear()
        for part, outcome in explain_parts(explainer, good, batch) if batch is not None else ():
            if isinstance(outcome, str):
                events += [Failure(str(item.input.path), outcome) for item in part]
            else:
                yield events, part, outcome
                events = []
        if events:
            yield events, [], None
    if early:
        yield list(early), [], None


def _submit(
    batch: Batch,
    explainer: Explainer,
    options: RunOptions,
    writer: ThreadPoolExecutor,
    lines: ManifestLines,
) -> Pending:
    events, good, result = batch
    if result is None:
        return events, []
    ready = per_image(result, good)
    events = events + [
        Failure(str(item.input.path), NOT_FINITE)
        for item, maps in zip(good, ready, strict=True)
        if maps is None
    ]
    futures = [
        writer.submit(write_image, maps, explainer, options, lines)
        for maps in ready
        if maps is not None
    ]
    return events, futures


def _collect(entry: Pending) -> Iterator[Event]:
    events, futures = entry
    yield from events
    for future in futures:
        yield future.result()
