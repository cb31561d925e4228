"""Sparse autoencoders on a model's activations, trained here and saved in SAELens's layout
(`cfg.json` + `sae_weights.safetensors`) beside the results store, where circuit discovery
(`interp circuit --method sae-features`), the dashboard and notebooks find them.

    interp sae train smollm2-135m --hook blocks.6.hook_resid_pre --k 32 --tokens 200000
    interp sae train smollm2-135m --hook blocks.12.attn.hook_result --head 3
    interp sae list

Hooks are TransformerLens names: blocks.L.hook_resid_pre/mid/post, blocks.L.hook_attn_out,
blocks.L.hook_mlp_out, blocks.L.attn.hook_z (all heads, or one with --head) and
blocks.L.attn.hook_result (what heads write to the residual: one SAE shared by every head, or
one head with --head). Each SAE is reported with explained variance, L0, dead fraction and the
next-token loss with its reconstruction spliced in, on held-out windows of the corpus.
"""

from __future__ import annotations

from pathlib import Path

from interp_cli.commands.common import (add_model_arguments, add_store_argument, check_json_path,
                                        emit_json, load_from_args, open_store,
                                        open_store_read_only, print_table)

HELP = "train sparse autoencoders (SAELens layout) and list the trained ones"


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = actions.add_parser("train", help="train an SAE at a hook and store it",
                               description=__doc__)
    add_model_arguments(train)
    add_store_argument(train)
    train.add_argument("--hook", required=True, help="TransformerLens hook name, e.g. "
                       "blocks.6.hook_resid_pre")
    train.add_argument("--head", type=int, default=None,
                       help="one head's output (attn.hook_z / attn.hook_result only)")
    train.add_argument("--features", type=int, default=None,
                       help="dictionary size (default 8 x the input width)")
    train.add_argument("--k", type=int, default=32,
                       help="TopK SAE with this k (default 32); 0 trains a ReLU SAE with an L1 penalty")
    train.add_argument("--tokens", type=int, default=100_000,
                       help="activation vectors to train on (default 100000)")
    train.add_argument("--corpus", default=None,
                       help="a .txt file or folder of .txt files (default: the shipped novel)")
    train.add_argument("--json", default=None, metavar="PATH",
                       help="also write the quality report as JSON to PATH ('-' prints it)")
    listing = actions.add_parser("list", help="the SAEs in the store")
    add_store_argument(listing)
    listing.add_argument("--model-id", default=None, help="only SAEs of this model id")


def run(args) -> int:
    if args.action == "list":
        return _list(args)
    return _train(args)


def _check(args) -> None:
    """Everything that can be checked before the model loads."""
    from circuits.sae.hook_names import check_hook_syntax
    from interp.errors import InvalidInput

    check_hook_syntax(args.hook)
    if args.features is not None and args.features < 1:
        raise InvalidInput(f"--features must be at least 1, got {args.features}")
    if args.k < 0 or (args.features is not None and args.k > args.features):
        raise InvalidInput(f"--k must be 0 (ReLU SAE) or between 1 and --features, got {args.k}")
    if args.tokens < 1024:
        raise InvalidInput(f"--tokens must be at least 1024 (one training batch), got {args.tokens}")
    if args.corpus is not None and not Path(args.corpus).expanduser().exists():
        raise InvalidInput(f"--corpus {args.corpus} does not exist: name a .txt file or a folder "
                           "of .txt files (or leave it out for the shipped novel)")
    check_json_path(args.json)


def _train(args) -> int:
    _check(args)
    store = open_store(args.store)
    from circuits.sae.train import train_sae

    model = load_from_args(args)
    trained = train_sae(model, args.hook, head=args.head, features=args.features,
                        k=args.k or None, tokens=args.tokens, corpus=args.corpus, store=store)
    report = {"run_id": trained.run_id, "path": str(trained.path), **trained.report}
    if emit_json(args.json, report):
        return 0
    print(f"SAE at {trained.point.label()}: {report['features']} features, "
          f"{report['architecture']}" + (f" k={report['k']}" if report["k"] else ""))
    for key in ("explained_variance", "l0", "dead_fraction", "loss_clean", "loss_spliced",
                "loss_increase"):
        if key in report:
            print(f"  {key}: {report[key]:.4g}")
    print(f"stored as run {trained.run_id}: {trained.path}")
    return 0


def _list(args) -> int:
    from circuits.sae.io import list_stored_saes

    path, store = open_store_read_only(args.store)
    rows = []
    for entry in list_stored_saes(store, args.model_id) if store else []:
        report = entry.get("report", {})
        rows.append({"run_id": entry["run_id"], "model_id": entry["model_id"],
                     "hook": entry.get("hook") + ("" if entry.get("head") is None else f"[{entry['head']}]"),
                     "features": entry.get("features"), "k": entry.get("k"),
                     "ev": f"{report.get('explained_variance', float('nan')):.3f}",
                     "l0": f"{report.get('l0', float('nan')):.1f}"})
    if not rows:
        print(f"no SAEs in {path}; train one with `interp sae train MODEL --hook NAME`")
        return 0
    print_table(rows, ["run_id", "model_id", "hook", "features", "k", "ev", "l0"])
    return 0
