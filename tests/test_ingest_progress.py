"""A large ingest shows how fast it goes and how long it has left: spans written and spans
per second on the files bar, a time-left column on every bar."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from app.cli import RichIngestProgress

C = "docs"


class Recorder:
    def __init__(self) -> None:
        self.span_counts: list[int] = []
        self.document_counts: list[tuple[int, int]] = []

    def files(self, done: int, total: int) -> None:
        pass

    def documents(self, done: int, total: int) -> None:
        self.document_counts.append((done, total))

    def spans(self, written: int) -> None:
        self.span_counts.append(written)


def test_the_files_bar_shows_spans_written_and_their_rate():
    now = [100.0]
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    with Progress(*RichIngestProgress.COLUMNS, console=console) as progress:
        bar = RichIngestProgress(progress, clock=lambda: now[0])
        bar.files(1, 4)
        now[0] += 2.0
        bar.spans(3000)
        (task,) = progress.tasks
        assert task.fields["rate"] == "3,000 spans · 1,500 spans/s"
        console.file.truncate(0)
        progress.refresh()
    shown = console.file.getvalue()
    assert "1,500 spans/s" in shown and "1/4" in shown and "eta" in shown


def test_ingest_reports_spans_written_as_it_goes(make_rag, tmp_path, samples_dir):
    rag = make_rag(tmp_path / "data")
    recorder = Recorder()
    report = rag.ingest_paths(C, [samples_dir], recorder)

    assert recorder.span_counts == sorted(recorder.span_counts)  # a running total
    assert recorder.span_counts[-1] == report.spans > 0
