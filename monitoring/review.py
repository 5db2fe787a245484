"""Review user feedback before any training sees it: list it (with each input's picture), look
at it on a sheet of pictures, accept it, reject it.

    python -m monitoring.review list [--status pending] [--label 3] [--predicted 8] ...
    python -m monitoring.review sheet --out review.html  # the pending ones (filters as `list`)
    python -m monitoring.review accept ID [ID ...]       # or: mnist-feedback accept ...
    python -m monitoring.review reject --label not_a_digit --since 2026-06-01
    python -m monitoring.review accept --all-pending

Only accepted feedback reaches the pipeline (`Store.accepted_feedback`), and an input sent
several times (the same 28×28 grey levels) counts once. The store is $MNIST_STORE_URL, or
`--store`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from mnist_core.labels import LABELS
from monitoring.pictures import block_picture
from monitoring.records import FeedbackFilter
from monitoring.settings import MonitoringSettings
from monitoring.sheet import ReviewItem, render_sheet, review_items
from monitoring.store import Store, open_store
from monitoring.tables import STATUSES


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mnist-feedback", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--store", help="SQLAlchemy URL of the store (default $MNIST_STORE_URL)")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, purpose in (
        ("list", "show feedback, each with a small picture of its input"),
        ("sheet", "write an HTML page of feedback with its inputs' pictures (default: pending)"),
        ("accept", "accept feedback for training"),
        ("reject", "keep feedback out of training"),
    ):
        command = commands.add_parser(name, help=purpose, description=purpose)
        command.add_argument("ids", nargs="*", help="prediction ids (default: the filters alone)")
        command.add_argument(
            "--status",
            choices=STATUSES,
            default="pending" if name == "sheet" else None,
            help="only feedback in this state",
        )
        command.add_argument("--label", choices=LABELS, help="only this label from the user")
        command.add_argument(
            "--predicted",
            type=int,
            choices=range(10),
            metavar="DIGIT",
            help="only answers that predicted this digit",
        )
        command.add_argument("--version", help="only answers of this model version")
        command.add_argument("--since", type=_moment, help="only feedback from this ISO time on")
        if name == "list":
            command.add_argument(
                "--no-pictures", action="store_true", help="one line per feedback, no picture"
            )
        if name == "sheet":
            command.add_argument("--out", type=Path, required=True, help="the HTML file to write")
        if name in ("accept", "reject"):
            command.add_argument(
                "--all-pending",
                action="store_true",
                help="every pending feedback (with the filters, if any)",
            )
    return parser


def _filter(args: argparse.Namespace) -> FeedbackFilter:
    status = "pending" if getattr(args, "all_pending", False) else args.status
    return FeedbackFilter(
        status=status,
        label=args.label,
        predicted=args.predicted,
        model_version=args.version,
        since=args.since,
        ids=tuple(args.ids),
    )


def _print_rows(items: Sequence[ReviewItem], pictures: bool) -> None:
    print(
        f"{'prediction id':32}  {'created (UTC)':19}  {'version':>8}  {'said':>4}  "
        f"{'label':>11}  {'status':8}  input"
    )
    for item in items:
        row = item.row
        print(
            f"{row.prediction_id:32}  {row.created_at:%Y-%m-%d %H:%M:%S}  "
            f"{row.model_version:>8}  {row.predicted:>4}  {row.label:>11}  {row.status:8}  "
            f"{row.input_hash[:12]}"
        )
        if pictures:
            for line in block_picture(item.pixels):
                print(f"    {line}")
    inputs = len({item.row.input_hash for item in items})
    print(f"{len(items)} feedback, {inputs} distinct inputs (a repeated input counts once)")


def _write_sheet(items: list[ReviewItem], which: FeedbackFilter, out: Path) -> None:
    title = f"Feedback to review ({which.status or 'any status'})"
    out.write_text(render_sheet(items, title), encoding="utf-8")
    print(f"{len(items)} feedback on {out}: open it in a browser.")


def run(store: Store, args: argparse.Namespace) -> int:
    """Carry out one command; returns the exit status."""
    which = _filter(args)
    if args.command == "list":
        _print_rows(review_items(store, which), pictures=not args.no_pictures)
        return 0
    if args.command == "sheet":
        _write_sheet(review_items(store, which), which, args.out)
        return 0
    if which == FeedbackFilter():
        print(
            f"Say which feedback to {args.command}: ids, filters, or --all-pending.",
            file=sys.stderr,
        )
        return 2
    if args.ids:
        known = {row.prediction_id for row in store.list_feedback(FeedbackFilter(ids=which.ids))}
        if missing := sorted(set(args.ids) - known):
            print(f"No feedback for {', '.join(missing)}: nothing changed.", file=sys.stderr)
            return 1
    status = "accepted" if args.command == "accept" else "rejected"
    changed = store.review(which, status)
    print(f"{changed} feedback {status}.")
    return 0


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    store = open_store(args.store or MonitoringSettings().store_url)
    try:
        status = run(store, args)
    finally:
        store.close()
    sys.exit(status)


if __name__ == "__main__":
    main()
