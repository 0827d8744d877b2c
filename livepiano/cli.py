"""The `livepiano` command: argument parsing and wiring only.

Every subcommand imports what it needs inside its own function, so `livepiano --help`
stays fast and the play path never imports torch.
"""

from __future__ import annotations

import argparse
import sys

from livepiano import LivepianoError, __version__


# --- inspect ------------------------------------------------------------------------------

def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="show what a MIDI file looks like as performance events")
    p.add_argument("file", help="a .mid/.midi file")
    p.add_argument("--tokens", action="store_true",
                   help="print the token ids on one line, space-separated, and nothing else")
    p.set_defaults(run=_cmd_inspect)


def _cmd_inspect(args) -> int:
    from livepiano import codec

    notes = codec.midi_to_notes(args.file)
    if not notes:
        raise LivepianoError(f"{args.file} is a MIDI file with no notes in it.")
    tokens = codec.notes_to_tokens(notes)
    if args.tokens:
        print(" ".join(map(str, tokens)))
        return 0
    seconds = codec.duration_steps(tokens) / codec.STEPS_PER_SECOND
    counts = codec.events_per_kind(tokens)
    print(f"file          {args.file}")
    print(f"duration      {seconds:.2f} s")
    print(f"notes         {len(notes)}")
    print(f"events        {len(tokens)}")
    print(f"events/s      {len(tokens) / seconds:.1f}" if seconds else "events/s      -")
    print("histogram")
    for name, label in (("on", "note-on"), ("off", "note-off"), ("shift", "time-shift"),
                        ("velocity", "velocity")):
        share = counts[name] / len(tokens) if tokens else 0.0
        print(f"  {label:<11} {counts[name]:>8}  {share:6.1%}  {'#' * round(share * 40)}")
    return 0


# --- prepare ------------------------------------------------------------------------------

def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="encode a folder of MIDI files into a token cache")
    p.add_argument("data_dir", help="folder of MIDI files (MAESTRO's CSV split is used when present)")
    p.add_argument("-o", "--output", required=True, help="cache folder to write")
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    p.set_defaults(run=_cmd_prepare)


def _cmd_prepare(args) -> int:
    import time

    from livepiano import data

    t0 = time.monotonic()
    report = data.prepare(args.data_dir, args.output, workers=args.workers)
    took = time.monotonic() - t0
    for split in data.SPLITS:
        print(f"{split:<11} {report.files[split]:>5} files  {report.tokens[split]:>11,} tokens  "
              f"{report.seconds[split] / 3600:7.2f} h")
    if report.skipped:
        print(f"skipped {len(report.skipped)} file(s):")
        for name, why in report.skipped:
            print(f"  {name}: {why}")
    print(f"cache {args.output}: {report.bytes / 2**20:.1f} MiB, took {took:.0f} s")
    return 0


# --- main ---------------------------------------------------------------------------------

_COMMANDS = [_add_inspect, _add_prepare]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livepiano",
        description="A real-time MIDI improvisation instrument: you play, a Performance RNN answers.")
    parser.add_argument("--version", action="version", version=f"livepiano {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except LivepianoError as e:
        print(f"livepiano: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("livepiano: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
