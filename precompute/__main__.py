"""Command line: ``python -m precompute {run,verify,export,push,report}``; a bare call prints help."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import ExplorerError


def _heads(text: str):
    from .artifacts import parse_head

    try:
        return tuple(parse_head(h) for h in text.split(",") if h.strip())
    except ExplorerError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _k_u(text: str):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cspa-k-u must be a number, got {text!r}") from None
    return int(value) if ("." not in text and value >= 1) else value


def build_parser() -> argparse.ArgumentParser:
    from .models import MODEL_NAMES
    from .pipeline import RunConfig

    d = RunConfig()
    p = argparse.ArgumentParser(prog="python -m precompute", description="Copy Suppression Explorer: precompute "
                                "per-token analyses of attention heads into artifact folders.")
    sub = p.add_subparsers(dest="command")
    r = sub.add_parser("run", help="analyse a dataset and write an artifact folder")
    r.add_argument("--model", default=d.model, choices=MODEL_NAMES)
    r.add_argument("--heads", type=_heads, default=None, help="e.g. 10.7,11.10 (default: the model's head)")
    r.add_argument("--dataset", default=d.dataset, help="Hub dataset, a .txt/.jsonl file or folder, or synthetic")
    r.add_argument("--split", default=d.split)
    r.add_argument("--n-seqs", type=int, default=d.n_seqs)
    r.add_argument("--seq-len", type=int, default=d.seq_len)
    r.add_argument("--batch-size", type=int, default=d.batch_size)
    r.add_argument("--shard-size", type=int, default=d.shard_size)
    r.add_argument("--n-mean", type=int, default=d.n_mean, help="documents averaged for the mean ablation")
    r.add_argument("--seed", type=int, default=d.seed)
    r.add_argument("--k", type=int, default=d.k, help="top-k for every vocabulary-sized quantity")
    r.add_argument("--k-attn", type=int, default=d.k_attn, help="attention sources stored per query")
    r.add_argument("--cspa-k-u", type=_k_u, default=d.cspa_k_u, help="fraction (0.05) or count (5)")
    r.add_argument("--cspa-k-s", type=int, default=d.cspa_k_s)
    r.add_argument("--cspa-both-signs", action="store_true", help="keep positive components too")
    r.add_argument("--effects", default=",".join(d.effects), help="ablation effects: direct,both,indirect")
    r.add_argument("--ln-modes", default=",".join(d.ln_modes), help="final LayerNorm modes: frozen,unfrozen")
    r.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    r.add_argument("--dtype", default=d.dtype, choices=("float32", "bfloat16", "float16"))
    r.add_argument("--out", default=d.out)
    r.add_argument("--resume", action="store_true", help="skip shards already complete and valid")
    v = sub.add_parser("verify", help="check every file against the manifest")
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
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "run":
            from .models import DEFAULT_HEADS
            from .pipeline import RunConfig, run

            cfg = RunConfig(model=args.model, heads=args.heads or (DEFAULT_HEADS[args.model],),
                            dataset=args.dataset, split=args.split, seed=args.seed, n_seqs=args.n_seqs,
                            seq_len=args.seq_len, batch_size=args.batch_size, shard_size=args.shard_size,
                            n_mean=args.n_mean, k=args.k, k_attn=args.k_attn, cspa_k_u=args.cspa_k_u,
                            cspa_k_s=args.cspa_k_s, cspa_negative_only=not args.cspa_both_signs,
                            effects=tuple(x.strip() for x in args.effects.split(",") if x.strip()),
                            ln_modes=tuple(x.strip() for x in args.ln_modes.split(",") if x.strip()),
                            device=args.device, dtype=args.dtype, out=args.out, resume=args.resume)
            run(cfg, log=lambda msg: print(msg, file=sys.stderr))
        elif args.command == "verify":
            from .artifacts import verify

            problems = verify(args.dir)
            if problems:
                print("verification FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
                return 1
            print(f"{args.dir}: every file matches the manifest")
        elif args.command == "export":
            from .artifacts import open_artifacts
            from .record_arrays import to_jsonable
            from .tokenization import token_strings

            arts = open_artifacts(args.dir)
            rec = arts.sequence(args.seq, head=args.head)
            out = {"sequence": args.seq, "head": args.head or arts.manifest["heads"][0],
                   "token_strings": token_strings(arts.tokenizer, rec["tokens"].tolist()), **to_jsonable(rec)}
            json.dump(out, sys.stdout)
            sys.stdout.write("\n")
        elif args.command == "push":
            from .hub import push

            print(push(args.dir, args.repo, args.revision, args.private))
        elif args.command == "report":
            from .artifacts import open_artifacts
            from .report import format_report

            print(format_report(open_artifacts(args.dir)))
    except ExplorerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
