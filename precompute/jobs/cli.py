"""Command line: ``python -m precompute {run,survey,verify,export,push,report,schema}``; a bare call prints help.

The ``run`` and ``survey`` options are generated from ``RunConfig``'s and ``SurveyConfig``'s fields and their help
text (``add_dataclass_options``).
argparse rather than a CLI library: the values need the project's own parsers (head lists, K_u as a fraction or
a count) and their error messages, which the generator passes through as argparse errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from ..errors import ExplorerError


def _argtype(parse):
    def convert(text: str):
        try:
            return parse(text)
        except ExplorerError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_dataclass_options(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--field-name`` option per dataclass field, from its type, default and ``metadata`` (help, parse,
    flag, choices, show)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        help_text = meta.get("help", "")
        if hints[f.name] is bool:
            action = "store_false" if f.default else "store_true"
            parser.add_argument(flag, dest=f.name, action=action, default=f.default, help=help_text)
            continue
        shown = f.default if f.default is None or "show" not in meta else meta["show"](f.default)
        kwargs: dict[str, typing.Any] = {
            "dest": f.name,
            "default": f.default,
            "help": help_text if f.default is None else f"{help_text} (default: {shown})",
        }
        if "choices" in meta:
            kwargs["choices"] = meta["choices"]
        kwargs["type"] = _argtype(meta["parse"]) if "parse" in meta else hints[f.name]
        parser.add_argument(flag, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from .config import RunConfig
    from .survey import SurveyConfig

    p = argparse.ArgumentParser(
        prog="python -m precompute",
        description="Copy Suppression Explorer: precompute "
        "per-token analyses of attention heads into artifact folders.",
    )
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="analyse a dataset and write an artifact folder")
    add_dataclass_options(r, RunConfig)
    sv = sub.add_parser("survey", help="score every head of a model (copy suppression, induction…) into a folder")
    add_dataclass_options(sv, SurveyConfig)
    v = sub.add_parser("verify", help="check every file of a run or survey folder against its manifest")
    v.add_argument("dir")
    e = sub.add_parser("export", help="one sequence as JSON on stdout")
    e.add_argument("dir")
    e.add_argument("--seq", type=int, required=True)
    e.add_argument("--head", default=None)
    u = sub.add_parser("push", help="upload an artifact folder to a Hugging Face dataset repo")
    u.add_argument("dir")
    u.add_argument("--repo", required=True)
    u.add_argument("--revision", default=None)
    u.add_argument("--private", action="store_true")
    rep = sub.add_parser("report", help="the paper's numbers next to those of an artifact folder")
    rep.add_argument("dir")
    rep.add_argument("--head", default=None)
    rep.add_argument("--json", action="store_true", help="the whole table as JSON")
    rep.add_argument(
        "--survey",
        default=None,
        metavar="DIR",
        help="a survey folder of the same model for the verdict's percentiles and baseline heads (default: one "
        "beside the artifacts, if any)",
    )
    rep.add_argument(
        "--interventions",
        type=int,
        default=0,
        metavar="N",
        help="also measure CSPA with each intervention (QK and OV, QK only, OV only) on the first N sequences; "
        "loads the model",
    )
    sub.add_parser("schema", help="print the stored-field tables of artifacts/README.md")
    from .demo import NAMES

    d = sub.add_parser("demo", help="build the app's demo sets (the launcher runs this on a first start)")
    d.add_argument("names", nargs="+", choices=NAMES, metavar="NAME", help=f"one or more of {', '.join(NAMES)}")
    d.add_argument("--out", default="artifacts", help="the folder the sets go into (default: artifacts)")
    return p


def _report(args) -> None:
    import json

    from ..store.reader import open_artifacts
    from ..validate import whole_number
    from .report import find_survey, format_report, intervention_lines, interventions, report_json

    arts = open_artifacts(args.dir)
    survey = find_survey(arts, args.survey)
    measured = None
    if args.interventions:
        n = whole_number("--interventions", args.interventions, arts.n_sequences)
        measured = interventions(arts, args.head, n)
    if args.json:
        print(json.dumps(report_json(arts, args.head, measured, args.interventions or None, survey), indent=2))
        return
    print(format_report(arts, args.head, survey))
    if measured is not None:
        print("\n".join(intervention_lines(measured, args.interventions)))


def config_from_args(args):
    """The RunConfig that ``run``'s parsed options describe."""
    from .config import RunConfig

    return RunConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)})


def _run(args) -> None:
    from .pipeline import run

    run(config_from_args(args), log=lambda msg: print(msg, file=sys.stderr))


def _export(args) -> None:
    from .. import schema
    from ..store.reader import open_artifacts
    from ..store.record_arrays import exported

    arts = open_artifacts(args.dir)
    rec = arts.sequence(args.seq, head=args.head)
    head = schema.head_key(arts._head(args.head))
    out = {"sequence": args.seq, "head": head, **exported(rec, arts.tokenizer)}
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "run":
            _run(args)
        elif args.command == "survey":
            from .survey import main_survey

            main_survey(args)
        elif args.command == "verify":
            from ..store.verify import verify

            problems = verify(args.dir)
            if problems:
                print("verification FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
                return 1
            print(f"{args.dir}: every file matches the manifest")
        elif args.command == "export":
            _export(args)
        elif args.command == "push":
            from ..store.hub import push

            print(push(args.dir, args.repo, args.revision, args.private))
        elif args.command == "report":
            _report(args)
        elif args.command == "demo":
            from .demo import main_demo

            return main_demo(args)
        elif args.command == "schema":
            from ..schema import readme_table, survey_table

            print(readme_table())
            print()
            print(survey_table())
    except ExplorerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
