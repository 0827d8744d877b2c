"""The `livepiano` command: argument parsing and wiring only.

Every subcommand imports what it needs inside its own function, so `livepiano --help`
stays fast and the play path never imports torch.
"""

from __future__ import annotations

import argparse
import logging
import sys

from livepiano import LivepianoError, __version__
from livepiano.settings.choices import finite

log = logging.getLogger(__name__)

# --- inspect ------------------------------------------------------------------------------

def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="show what a MIDI file looks like as performance events")
    p.add_argument("file", help="a .mid/.midi file")
    p.add_argument("--tokens", action="store_true",
                   help="print the token ids on one line, space-separated, and nothing else")
    p.set_defaults(run=_cmd_inspect)


def _cmd_inspect(args) -> int:
    from livepiano.core import codec, midifile

    notes = midifile.midi_file_notes(args.file)
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
    p.add_argument("data_dir",
                   help="folder of MIDI files (MAESTRO's CSV split is used when present)")
    p.add_argument("-o", "--output", required=True, help="cache folder to write")
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    p.set_defaults(run=_cmd_prepare)


def _cmd_prepare(args) -> int:
    import time

    from livepiano.learn import dataset

    t0 = time.monotonic()
    report = dataset.prepare(args.data_dir, args.output, workers=args.workers)
    took = time.monotonic() - t0
    for split in dataset.SPLITS:
        print(f"{split:<11} {report.files[split]:>5} files  {report.tokens[split]:>11,} tokens  "
              f"{report.seconds[split] / 3600:7.2f} h")
    if report.skipped:
        print(f"skipped {len(report.skipped)} file(s):")
        for name, why in report.skipped:
            print(f"  {name}: {why}")
    print(f"cache {args.output}: {report.bytes / 2**20:.1f} MiB, took {took:.0f} s")
    return 0


# --- train ------------------------------------------------------------------------------

def _add_train(sub) -> None:
    from livepiano.learn.plan import DECAYS, PLANS
    from livepiano.learn.plan import TrainConfig as D

    p = sub.add_parser("train", help="train Performance RNN on a token cache (needs the [train] "
                                     "extra); under torchrun, on several processes")
    p.add_argument("cache", help="token cache made by `livepiano prepare`")
    p.add_argument("-o", "--out", default=D.out,
                   help="checkpoint to write, and to resume from when it exists "
                        "(default: %(default)s)")
    p.add_argument("--init-from", metavar="CKPT.pt", default=D.init_from,
                   help="start a new run (own schedule) from the weights of this checkpoint")
    p.add_argument("--widen", metavar="UNITS", type=int, default=D.widen,
                   help="with --init-from: grow its hidden layers to UNITS units; the grown "
                        "network starts out computing exactly what the checkpoint's did")
    p.add_argument("--fresh", action="store_true", help="start over even if the checkpoint exists")
    g = p.add_argument_group("budget and schedule")
    g.add_argument("--minutes", type=finite, default=D.minutes, help="stop after this many minutes")
    g.add_argument("--max-steps", type=int, default=D.max_steps, help="stop after this many steps")
    g.add_argument("--plan", choices=PLANS, default=D.plan,
                   help="what the learning-rate schedule spans: --epochs of training tokens, or "
                        "the --minutes budget (default: %(default)s)")
    g.add_argument("--epochs", type=finite, default=D.epochs,
                   help="passes over the train split the schedule spans (default: %(default)s)")
    g.add_argument("--lr", type=finite, default=D.lr,
                   help="peak learning rate (default: %(default)s)")
    g.add_argument("--min-lr-ratio", type=finite, default=D.min_lr_ratio,
                   help="the floor, as a share of the peak (default: %(default)s)")
    g.add_argument("--warmup", type=finite, default=D.warmup,
                   help="share of the plan rising to the peak (default: %(default)s)")
    g.add_argument("--decay", choices=DECAYS, default=D.decay, help="default: %(default)s")
    g.add_argument("--weight-decay", type=finite, default=D.weight_decay,
                   help="decoupled weight decay of the weight matrices (default: %(default)s)")
    g = p.add_argument_group("model (a new run only)")
    g.add_argument("--hidden", type=int, default=D.hidden, help="default: %(default)s")
    g.add_argument("--layers", type=int, default=D.layers, help="default: %(default)s")
    g.add_argument("--embedding", type=int, default=D.embedding, help="default: %(default)s")
    g.add_argument("--dropout", type=finite, default=D.dropout, help="default: %(default)s")
    g.add_argument("--unconditioned", action="store_true", help="no control input")
    g = p.add_argument_group("two players")
    g.add_argument("--two-players", action="store_true",
                   help="a model that knows who played each event (a player input; it learns "
                        "its own events only); with --init-from a one-player checkpoint, the "
                        "input is added, starting silent")
    g.add_argument("--solo-share", type=finite, default=D.solo_share,
                   help="share of its windows played alone (default: %(default)s)")
    g.add_argument("--duet-share", type=finite, default=D.duet_share,
                   help="share made duets, phrases in turn; the rest are one hand beside the "
                        "other (default: %(default)s)")
    g = p.add_argument_group("batches")
    g.add_argument("--batch", type=int, default=D.batch,
                   help="lanes in the whole batch, over all processes (default: %(default)s)")
    g.add_argument("--bptt", type=int, default=D.bptt,
                   help="tokens per truncated-backprop chunk (default: %(default)s)")
    g.add_argument("--window-seconds", type=finite, default=D.window_seconds,
                   help="length of a training window (default: %(default)s)")
    g.add_argument("--window-tokens", type=int, default=D.window_tokens,
                   help="a window's most tokens (default: %(default)s; Magenta's 512)")
    g = p.add_argument_group("machine and bookkeeping")
    g.add_argument("--device", default=D.device,
                   help="auto (CUDA when there is a GPU), cpu, cuda or cuda:N "
                        "(default: %(default)s)")
    g.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=D.precision,
                   help="auto: bf16 autocast on CUDA or on a CPU with native bf16 (AVX-512 "
                        "BF16 or AMX), float32 elsewhere (default: %(default)s)")
    g.add_argument("--threads", type=int, default=D.threads,
                   help="torch CPU threads per process (default: the machine's cores shared "
                        "out among the processes)")
    g.add_argument("--loader-workers", type=int, default=D.loader_workers,
                   help="processes drawing training windows ahead of the loop "
                        "(default: none on the CPU, up to 8 on CUDA)")
    g.add_argument("--eval-every", type=finite, default=D.eval_every_minutes,
                   help="minutes between validations (default: %(default)s)")
    g.add_argument("--eval-segments", type=int, default=D.eval_segments,
                   help="default: %(default)s")
    g.add_argument("--checkpoint-every", type=finite, default=D.checkpoint_every_minutes,
                   help="minutes between checkpoints (default: %(default)s)")
    g.add_argument("--seed", type=int, default=D.seed, help="default: %(default)s")
    p.set_defaults(run=_cmd_train)


def _cmd_train(args) -> int:
    from livepiano.learn.plan import TrainConfig

    try:
        from livepiano.learn.train import train
    except ImportError as e:
        raise LivepianoError(f"training needs torch ({e.name} is missing); "
                             f"install it with `pip install -e \".[train]\"`.") from None
    cfg = TrainConfig(cache=args.cache, out=args.out, init_from=args.init_from, widen=args.widen,
                      hidden=args.hidden, layers=args.layers, embedding=args.embedding,
                      dropout=args.dropout, conditioned=not args.unconditioned,
                      two_players=args.two_players, solo_share=args.solo_share,
                      duet_share=args.duet_share,
                      batch=args.batch, bptt=args.bptt, window_seconds=args.window_seconds,
                      window_tokens=args.window_tokens, lr=args.lr,
                      min_lr_ratio=args.min_lr_ratio, warmup=args.warmup, decay=args.decay,
                      weight_decay=args.weight_decay, plan=args.plan, epochs=args.epochs,
                      minutes=args.minutes, max_steps=args.max_steps,
                      eval_every_minutes=args.eval_every, eval_segments=args.eval_segments,
                      checkpoint_every_minutes=args.checkpoint_every, seed=args.seed,
                      device=args.device, precision=args.precision, threads=args.threads,
                      loader_workers=args.loader_workers)
    train(cfg, resume=not args.fresh)
    return 0


# --- ports and play (the live instrument) -------------------------------------------------

def _add_api_option(p) -> None:
    from livepiano.settings.schema import SCHEMA, help_text

    p.add_argument("--api", choices=_choices("api"), default=None,
                   help=help_text(SCHEMA["api"]))


def _choices(key: str) -> tuple | None:
    """The values a setting allows, when it is one of a list (the schema's check says)."""
    from livepiano.settings.schema import SCHEMA

    found = getattr(SCHEMA[key].check, "choices", None)
    return None if found is None else tuple(c for c in found if c is not None)


def _add_ports(sub) -> None:
    p = sub.add_parser("ports", help="list the MIDI input and output ports")
    _add_api_option(p)
    p.set_defaults(run=_cmd_ports)


def _cmd_ports(args) -> int:
    from livepiano.live import ports

    api = ports.resolve_api(args.api)
    ins, outs = ports.list_ports(api)
    print(f"MIDI system: {api}")
    builtin = f"{ports.BUILTIN}  (livepiano's built-in synth on the default sound device)"
    for title, names in (("inputs (--in)", ins), ("outputs (--out)", [*outs, builtin])):
        print(title)
        for name in names or ["(none)"]:
            print(f"  {name}")
    return 0


# play's options: setting -> (extra argparse keywords; the flag is --KEY with '-' for '_').
# Their help and default text are the settings schema's; every default is None ("not given"):
# the settings file, then the schema's default, decide.
PLAY_OPTIONS = {
    "in": {"metavar": "PORT"},
    "out": {"metavar": "PORT"},
    "api": {},
    "mode": {},
    "model": {},
    "temperature": {"type": finite},
    "channel": {"type": int},
    "lookahead_ms": {"type": int},
    "echo": {"action": "store_const", "const": True},
    "record": {"metavar": "FILE.mid"},
    "realtime": {},
    "seed": {"type": int},
}
KNOB_OPTIONS = {
    "control_in": {"metavar": "PORT"},
    "takeover": {},
}
VIEW_OPTIONS = {
    "view": {"action": "store_const", "const": True},
    "view_port": {"type": int, "metavar": "PORT"},
    "view_host": {"metavar": "ADDRESS"},
}
DUET_OPTIONS = {
    "wait": {"type": finite, "metavar": "S"},
    "min_call": {"type": finite, "metavar": "S"},
    "answer": {"metavar": "MIN-MAX"},
    "barge_in": {},
    "follow": {"action": argparse.BooleanOptionalAction},
    "end_of_call_cc": {"type": int, "metavar": "N"},
}


def _add_settings(p, options: dict) -> None:
    """An option for each setting named, its help and default text from the schema."""
    from livepiano.settings.schema import SCHEMA, help_text

    for key, extra in options.items():
        choices = _choices(key)
        kw = dict(extra, default=None, help=help_text(SCHEMA[key]))
        if choices is not None:
            kw["choices"] = choices
        p.add_argument("--" + key.replace("_", "-"), dest=key, **kw)


def _add_play(sub) -> None:
    p = sub.add_parser("play", help="play live: your notes in, the model's notes out",
                       description="Play live: your notes in, the model's notes out. A setting "
                                   "not given here is the settings file's, else the default "
                                   "shown.")
    _add_settings(p, PLAY_OPTIONS)
    p.add_argument("--config", metavar="FILE.yaml", default=None,
                   help="settings file, knob bindings included (default: $LIVEPIANO_CONFIG, "
                        "else livepiano.yaml in the user's config folder, when it is there)")
    p.add_argument("--status", action="store_const", const=True, default=None,
                   help="show the status line even when stderr is not a terminal")
    _add_log_option(p)
    _add_controls_option(p)
    _add_settings(p, KNOB_OPTIONS)
    _add_view_options(p)
    _add_settings(p.add_argument_group("duet (--mode duet: you play a phrase, the model "
                                       "answers)"), DUET_OPTIONS)
    p.set_defaults(run=_cmd_play)


def _cmd_play(args) -> int:
    from livepiano.live import session
    from livepiano.settings import files

    given = {key: getattr(args, key) for key in (*PLAY_OPTIONS, *KNOB_OPTIONS, *VIEW_OPTIONS,
                                                 *DUET_OPTIONS)}
    settings = files.for_play(args.config, dict(given, controls=args.controls))
    return session.Session(settings, status=args.status).run()


def _add_view_options(p) -> None:
    _add_settings(p.add_argument_group("the stage view (a page that shows the session and "
                                       "steers the knobs; docs/view.md)"), VIEW_OPTIONS)


# --- knobs: controls, learn ---------------------------------------------------------------

def _add_controls_option(p) -> None:
    p.add_argument("--controls", metavar="FILE.yaml", default=None,
                   help="read the knob bindings from this file and save learned ones there "
                        "(default: $LIVEPIANO_CONTROLS, else the settings file: "
                        "livepiano.yaml in the user's config folder)")


def _add_controls(sub) -> None:
    p = sub.add_parser("controls", help="list the knob bindings (made by `livepiano learn`) "
                                        "and the file they are in")
    _add_controls_option(p)
    p.set_defaults(run=_cmd_controls)


def _cmd_controls(args) -> int:
    from pathlib import Path

    from livepiano.live import controls
    from livepiano.settings import files, params

    settings = files.for_play(None, {"controls": args.controls})  # what `play` would use
    path = Path(settings["controls"])
    ctl = controls.Controls(settings["bindings"], takeover=settings["takeover"])
    print(f"file           {path}" + ("" if path.exists() else " (not there yet)"))
    print(f"takeover       {ctl.takeover}")
    lines = ctl.describe()
    if not lines:
        print("no bindings yet: bind a knob with `livepiano learn temperature --in "
              "\"Controller\"` (parameters: " + ", ".join(params.PARAMS) + ")")
    for line in lines:
        print(line)
    return 0


def _add_learn(sub) -> None:
    from livepiano.settings.params import PARAMS

    p = sub.add_parser("learn", help="bind the next knob, fader or pad you move to a parameter")
    p.add_argument("param", help="what to bind: " + ", ".join(PARAMS))
    p.add_argument("--in", dest="in_", metavar="PORT",
                   help="the controller's input port, by any part of its name (default: a "
                        "virtual port)")
    _add_api_option(p)
    _add_controls_option(p)
    p.add_argument("--timeout", type=finite, default=60.0,
                   help="give up after this many seconds (default: 60)")
    p.set_defaults(run=_cmd_learn)


def _cmd_learn(args) -> int:
    import time

    from livepiano.live import controls, ports
    from livepiano.settings import bindings, files

    path = files.bindings_path(args.controls)
    ctl = controls.load(path)  # a bad file fails before the port opens
    start = ctl.start_learn(args.param)  # so does an unknown parameter
    api = ports.resolve_api(args.api)
    port = ports.Port("in", api, args.in_)
    try:
        port.client.ignore_types(sysex=True, timing=True, active_sense=True)
        print(f"livepiano: {start.text} on {port.label} (Ctrl-C gives up)...", file=sys.stderr,
              flush=True)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            item = port.client.get_message()
            if item is None:
                time.sleep(0.002)
                continue
            for change in ctl.handle(item[0]):
                if change.param == "bound":
                    saved = bindings.save(path, ctl.bindings.values())
                    print(f"{change.text}; saved to {saved}")
                    return 0
        print(f"livepiano: no control moved in {args.timeout:g} s; nothing bound.",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("livepiano: interrupted; nothing bound.", file=sys.stderr)
        return 1
    finally:
        port.close()


def _add_recover(sub) -> None:
    p = sub.add_parser("recover", help="turn the journal of a session that did not end "
                                       "(killed, crashed) into its MIDI file")
    p.add_argument("journal", nargs="+", metavar="FILE.mid.journal",
                   help="a session's journal (play finds and recovers these itself at start)")
    p.set_defaults(run=_cmd_recover)


def _cmd_recover(args) -> int:
    from livepiano.live.recorder import recover

    for path in args.journal:
        saved, contents = recover(path)
        print(f"recovered {contents.seconds():.0f} s from {path}: saved to {saved}")
    return 0


# --- export, eval, generate, bench (the model) ------------------------------------------------

def _add_export(sub) -> None:
    p = sub.add_parser("export",
                       help="export a training checkpoint to one ONNX file and its YAML card")
    p.add_argument("checkpoint", help="a .pt checkpoint written by `livepiano train`")
    p.add_argument("-o", "--output", required=True,
                   help="the .onnx file to write, e.g. models/NAME.onnx "
                        "(NAME.yaml is written beside it)")
    p.add_argument("--eval-data", default=None, metavar="CACHE_OR_MIDI_DIR",
                   help="also measure the test NLL with the exported model on this token cache "
                        "or folder of MIDI files and record it in the card")
    p.add_argument("--split", default="test", help="split for --eval-data (default: test)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="score only the first N files of --eval-data")
    p.add_argument("--int8", action="store_true",
                   help="store the weights as int8 (onnxruntime dynamic quantization): about 4x "
                        "smaller and 3x faster per step on a CPU; checked by its drift from torch")
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime threads for --eval-data (default: 1)")
    p.set_defaults(run=_cmd_export)


def _cmd_export(args) -> int:
    from livepiano.learn import export

    export.export(args.checkpoint, args.output, eval_data=args.eval_data, split=args.split,
                  limit=args.limit, int8=args.int8, threads=args.threads)
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval",
                       help="mean NLL (nats/event) of an exported model over 30-second segments")
    p.add_argument("model", help="an exported .onnx model")
    p.add_argument("data", help="a token cache folder (index.json) or a folder of MIDI files "
                                "(a MAESTRO CSV in it gives the split; otherwise every file is "
                                "used)")
    p.add_argument("--split", default="test", help="split to score (default: test)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="score only the first N files")
    p.add_argument("--batch", type=int, default=16, help="segments scored together (default: 16)")
    p.add_argument("--threads", type=int, default=1,
                   help="onnxruntime intra-op threads (default: 1)")
    p.add_argument("--json", action="store_true",
                   help="end with one line of JSON holding the figures")
    p.set_defaults(run=_cmd_eval)


def _cmd_eval(args) -> int:
    import json

    from livepiano.learn.evaluate import evaluate

    r = evaluate(args.model, args.data, split=args.split, limit=args.limit, batch=args.batch,
                 threads=args.threads, progress=True)
    print(f"data         {r.source}" + (f" (split {r.split})" if r.split else " (all files)"))
    print(f"files        {r.files}")
    print(f"segments     {r.segments} (30 s each, from a zero state)")
    print(f"events       {r.events}")
    print(f"NLL          {r.nll:.4f} nats/event")
    print(f"perplexity   {r.perplexity:.2f}")
    if args.json:
        print(json.dumps(r.to_dict()))
    return 0


def _add_generate(sub) -> None:
    from livepiano.settings.schema import SCHEMA

    p = sub.add_parser("generate",
                       help="generate a performance offline into a MIDI file (no torch)")
    p.add_argument("--model", default=None,
                   help="exported .onnx model "
                        "(default: $LIVEPIANO_MODEL or models/performance_rnn.onnx)")
    p.add_argument("--seconds", type=finite, default=30.0,
                   help="seconds of music to generate (default: 30)")
    p.add_argument("--temperature", type=finite, default=SCHEMA["temperature"].default,
                   help="sampling temperature (default: %(default)s)")
    p.add_argument("--primer", default=None, metavar="FILE.mid",
                   help="a MIDI file the model hears first; it is written to the output as its own "
                        "track, 'primer', and generation continues after its end on track "
                        "'livepiano', at the primer's density (unless --density) and leaning "
                        "toward its pitch classes")
    p.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable result")
    p.add_argument("--density", type=float, default=None, metavar="NOTES_PER_S",
                   help="notes per second the model's playing is steered toward, and the "
                        "density a conditioned model is given (default: the primer's, "
                        "else 10)")
    p.add_argument("--compare", default=None, metavar="CACHE_OR_MIDI_DIR",
                   help="also print the same figures for real playing: the median over the "
                        "30-second segments of this cache's test split or folder of MIDI files")
    p.add_argument("--compare-limit", type=int, default=30, metavar="N",
                   help="files of --compare to describe (default: 30)")
    p.add_argument("-o", "--output", required=True, help="the .mid file to write")
    _add_render_options(p)
    p.set_defaults(run=_cmd_generate)


def _add_render_options(p) -> None:
    p.add_argument("--wav", default=None, metavar="OUT.wav",
                   help="also render the MIDI file to audio: through FluidSynth where it is "
                        "installed, else the built-in synth")
    p.add_argument("--soundfont", default=None, metavar="FILE.sf2",
                   help="soundfont for --wav (default: $LIVEPIANO_SOUNDFONT, else the first "
                        "found in /usr/share/sounds/sf2, /usr/share/soundfonts, Homebrew's "
                        "share, else pretty_midi's TimGM6mb.sf2)")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="also draw the piano roll as a PNG (1200x500)")


def _render_outputs(args, midi_path) -> None:
    """--wav and --plot of a command that has written ``midi_path``."""
    if args.plot:
        from livepiano.tools.pianoroll import plot_midi

        print(f"plot         {plot_midi(midi_path, args.plot).describe()}")
    if args.wav:
        from livepiano.tools.render import render_midi

        print(f"wav          {render_midi(midi_path, args.wav, args.soundfont).describe()}")


def _cmd_generate(args) -> int:
    import time

    from livepiano.core import midifile
    from livepiano.runtime.engine import Engine
    from livepiano.runtime.modelfile import resolve_model
    from livepiano.runtime.offline import describe_notes, generate, prepare

    if not args.seconds > 0:
        raise LivepianoError(f"--seconds must be more than 0, not {args.seconds}.")
    if args.wav:  # a missing or broken soundfont is said before generating
        from livepiano.tools.render import renderer_line

        renderer_line(args.soundfont)
    engine = Engine(resolve_model(args.model), temperature=args.temperature, seed=args.seed)
    primer = midifile.midi_file_tokens(args.primer) if args.primer else []
    if args.primer and not primer:
        raise LivepianoError(f"{args.primer} has no notes to prime the model with; "
                             f"give another primer.")
    prepare(engine, primer, args.density)
    t0 = time.monotonic()
    result = generate(engine, args.seconds, primer)
    took = time.monotonic() - t0
    try:
        result.midi().save(args.output)
    except OSError as e:
        raise LivepianoError(f"cannot write {args.output} ({e.strerror or e}); "
                             f"check the folder.") from None
    stats = describe_notes(result.generated_notes(), args.seconds)
    print(f"wrote        {args.output}" + (" (tracks: primer, livepiano)" if primer else ""))
    print(f"generated    {len(result.tokens)} events, {stats['notes']} notes in {args.seconds:g} s "
          f"({took:.1f} s wall, {args.seconds / max(took, 1e-9):.0f}x real time)")
    real = None
    if args.compare:
        from livepiano.learn.evaluate import describe_data

        real = describe_data(args.compare, "test", args.compare_limit)
        where = f"{real['split']} split" if real["split"] else "all files"
        print(f"{'':13}{'generated':<14}real ({real['segments']} segments of {real['files']} "
              f"files, {where}; medians)")

    def row(label: str, mine: str, theirs) -> None:
        print(f"{label:<13}{mine:<14}{theirs}" if real else f"{label:<13}{mine}")

    row("notes/s", f"{stats['notes_per_s']}", real and real["notes_per_s"])
    if stats["notes"]:
        row("pitch range", f"{stats['pitch_min']}..{stats['pitch_max']}",
            real and f"{real['pitch_min']:g}..{real['pitch_max']:g}")
        row("velocity", f"{stats['velocity_min']}..{stats['velocity_max']}",
            real and f"{real['velocity_min']:g}..{real['velocity_max']:g}")
        row("velocity std", f"{stats['velocity_std']}", real and real["velocity_std"])
    _render_outputs(args, args.output)
    return 0


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw the piano roll of a recorded session or any MIDI file "
                                    "as a PNG")
    p.add_argument("file", help="a .mid file (a session: tracks player and livepiano)")
    p.add_argument("-o", "--output", default=None, metavar="OUT.png",
                   help="the PNG to write (default: the MIDI file's name with .png)")
    p.add_argument("--size", default="1200x500", metavar="WxH",
                   help="picture size in pixels (default: 1200x500)")
    p.set_defaults(run=_cmd_plot)


def _cmd_plot(args) -> int:
    from pathlib import Path

    from livepiano.tools.pianoroll import plot_midi

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise LivepianoError(f"--size must look like 1200x500, not {args.size!r}.") from None
    if not Path(args.file).is_file():
        raise LivepianoError(f"no MIDI file at {args.file}; give the path of a .mid file.")
    out = args.output or str(Path(args.file).with_suffix(".png"))
    print(f"wrote {plot_midi(args.file, out, width, height).describe()}")
    return 0


def _add_bench(sub) -> None:
    from livepiano.tools import bench

    p = sub.add_parser("bench", help="benchmarks: " + ", ".join(sorted(bench.BENCHES)))
    p.add_argument("which", choices=sorted(bench.BENCHES), help="which benchmark to run")
    bench.add_arguments(p)
    p.set_defaults(run=_cmd_bench)


def _cmd_bench(args) -> int:
    from livepiano.tools import bench

    return bench.run(args.which, args)


# --- demo (a duet without a keyboard) -----------------------------------------------------

def _add_demo(sub) -> None:
    from livepiano.live.ports import INPROCESS

    p = sub.add_parser("demo", help="hear it without a keyboard: a recorded pianist plays calls, "
                                    "the model answers, live on MIDI ports")
    p.add_argument("--seconds", type=finite, default=45.0,
                   help="about how long the duet lasts (default: 45)")
    p.add_argument("-o", "--output-dir", default=".", metavar="DIR",
                   help="where demo.mid, demo.wav and demo.png go (default: this folder)")
    p.add_argument("--plot", action="store_true", help="also draw the piano roll to demo.png")
    p.add_argument("--no-wav", dest="wav", action="store_false",
                   help="do not render demo.wav")
    p.add_argument("--api", choices=[*(a for a in _choices("api") if a != "winmm"), INPROCESS],
                   default=None,
                   help="MIDI system (default: ALSA or CoreMIDI where they open, else a "
                        "private JACK server, else livepiano's in-process ports)")
    p.add_argument("--model", default=None,
                   help="ONNX model (default: $LIVEPIANO_MODEL, else the shipped one)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--soundfont", default=None, metavar="FILE.sf2",
                   help="soundfont for the audio (default: the first one found, else "
                        "pretty_midi's TimGM6mb.sf2)")
    _add_log_option(p)
    _add_view_options(p)
    p.set_defaults(run=_cmd_demo)


def _cmd_demo(args) -> int:
    from livepiano.tools import demo

    result = demo.run(args.seconds, args.output_dir, plot=args.plot, api=args.api,
                      model=args.model, seed=args.seed, soundfont=args.soundfont, wav=args.wav,
                      view={key: getattr(args, key) for key in VIEW_OPTIONS})
    for line in result.report():
        print(line)
    return result.code


# --- logging --------------------------------------------------------------------------------

def _add_log_option(p) -> None:
    p.add_argument("--log", metavar="FILE", default=None,
                   help="write the session's debug log to this file (default: warnings to "
                        "stderr only)")


def _start_logging(path: str | None):
    """livepiano's loggers: warnings and worse to stderr; with ``path`` (--log), everything
    from debug on to that file as well. Returns the file's handler (None without one)."""
    root = logging.getLogger("livepiano")
    for h in [h for h in root.handlers if getattr(h, "_livepiano", False)]:
        root.removeHandler(h)  # main() may run more than once in a process (tests)
        h.close()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING)
    stderr.setFormatter(logging.Formatter("livepiano: %(message)s"))
    handlers = [stderr]
    to_file = None
    if path:
        try:
            to_file = logging.FileHandler(path, mode="w", encoding="utf-8")
        except OSError as e:
            raise LivepianoError(f"cannot write the log {path} ({e.strerror}).") from None
        to_file.setFormatter(logging.Formatter(
            "%(asctime)s.%(msecs)03d %(threadName)s %(name)s %(levelname)s: %(message)s",
            "%H:%M:%S"))
        handlers.append(to_file)
    for h in handlers:
        h._livepiano = True
        root.addHandler(h)
    root.setLevel(logging.DEBUG if path else logging.WARNING)
    return to_file


# --- main ---------------------------------------------------------------------------------

_COMMANDS = [_add_inspect, _add_prepare, _add_train, _add_ports, _add_play, _add_recover,
             _add_controls, _add_learn,
             _add_export, _add_eval, _add_generate, _add_plot, _add_demo, _add_bench]


class _Parser(argparse.ArgumentParser):
    """A bad command line is answered in one line (the usage is one ``--help`` away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help`.\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="livepiano",
        description="A real-time MIDI improvisation instrument: you play, a Performance RNN "
                    "answers.")
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
    to_file = None
    try:
        to_file = _start_logging(getattr(args, "log", None))
        return int(args.run(args) or 0)
    except LivepianoError as e:
        log.debug("%s", e, exc_info=True)
        print(f"livepiano: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("livepiano: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        if to_file is not None:
            to_file.close()


if __name__ == "__main__":
    sys.exit(main())
