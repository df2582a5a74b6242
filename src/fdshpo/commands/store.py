"""``fdshpo store serve|init|backup|restore``, and the ``--store`` / ``--s3-endpoint`` options
every command that reads or writes a store shares (:func:`add_store_options`,
:func:`store_from_args`)."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
from pathlib import Path


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """``--store URI`` (default ``$FDSHPO_STORE`` or ./fdshpo-store) and ``--s3-endpoint``."""
    parser.add_argument("--store", metavar="URI", default=None,
                        help="artifact store: a directory, file://PATH or s3://BUCKET[/PREFIX] "
                             "(default $FDSHPO_STORE or ./fdshpo-store)")
    parser.add_argument("--s3-endpoint", metavar="URL", default=None,
                        help="S3 endpoint for s3:// stores (default $AWS_ENDPOINT_URL); keys "
                             "come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")


def store_from_args(args: argparse.Namespace, existing: bool = True):
    """The store of ``--store`` / ``--s3-endpoint``. With ``existing`` (every command that
    reads a store) a local store must be a directory already: a mistyped path is an error,
    not an empty store (an S3 store's missing bucket is reported on first use)."""
    from ..errors import UserError
    from ..store import LocalStore, open_store

    store = open_store(args.store, s3_endpoint=args.s3_endpoint)
    if existing and isinstance(store, LocalStore) and not store.root.is_dir():
        given = "--store" if args.store else "the default store ($FDSHPO_STORE or ./fdshpo-store)"
        raise UserError(f"no store at {store.root} ({given}): no such directory; check the "
                        "path (a store is the folder a run wrote, e.g. ./fdshpo-store after "
                        "`make demo`)")
    return store


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("store", help="run a local S3 server, create, back up or "
                                                 "restore a store")
    sub = parser.add_subparsers(dest="store_command", metavar="ACTION", required=True)

    serve = sub.add_parser(
        "serve", help="start a local S3 server (SeaweedFS) and print how to use it",
        description="Start a SeaweedFS S3 server on 127.0.0.1 (free ports, generated keys), "
                    "create a bucket, print the environment variables to use it, and serve "
                    "until interrupted.")
    serve.add_argument("--dir", type=Path, default=None,
                       help="data directory (default: a temporary directory, removed at exit)")
    serve.add_argument("--bucket", default="fdshpo", help="bucket to create (default fdshpo)")
    serve.set_defaults(func=serve_command)

    init = sub.add_parser("init", help="create a store (an S3 bucket if it is missing)")
    init.add_argument("uri", metavar="URI", help="a directory, file://PATH or s3://BUCKET[/P]")
    init.add_argument("--s3-endpoint", metavar="URL", default=None,
                      help="S3 endpoint for an s3:// URI (default $AWS_ENDPOINT_URL)")
    init.add_argument("--minio-user-dir", metavar="DIR", default=None,
                      help="MinIO only, with the root keys in AWS_*: also create the user whose "
                           "keys are in DIR/accesskey and DIR/secretkey, allowed to read, write "
                           "and list this bucket and nothing else")
    init.set_defaults(func=init_command)

    for name, text in (("backup", "copy every artifact of the store into DEST, verified"),
                       ("restore", "copy every artifact of SOURCE into the store, verified")):
        action = sub.add_parser(name, help=text, description=text + "; finished artifacts are "
                                "never overwritten (a conflict is reported), corrupt ones and "
                                "ones deleted while copying are reported and skipped, "
                                "latest.json pointers only move to a run that finished later; "
                                "a restore leaves out leases and inner checkpoints and rebuilds "
                                "the run index from the restored runs")
        action.add_argument("other", metavar="DEST" if name == "backup" else "SOURCE",
                            help="a directory, file://PATH or s3://BUCKET[/PREFIX]")
        add_store_options(action)
        action.add_argument("--prefix", default="", help="only keys starting with this")
        action.set_defaults(func=mirror_command, direction=name)


def init_command(args: argparse.Namespace) -> int:
    from ..store import LocalStore, open_store
    from ..store.admin import create_bucket_user, read_user_keys

    user = read_user_keys(args.minio_user_dir) if args.minio_user_dir else None
    store = open_store(args.uri, s3_endpoint=args.s3_endpoint)
    if isinstance(store, LocalStore):
        store.root.mkdir(parents=True, exist_ok=True)
        print(f"store ready: {store.uri}")
        return 0
    created = store.ensure_bucket()
    print(f"{'created bucket' if created else 'bucket exists'}: {store.uri}")
    if user is not None:
        policy = create_bucket_user(store, user)
        print(f"user {user.access_key!r} may read, write and list s3://{store.bucket} only "
              f"(policy {policy})")
    return 0


def mirror_command(args: argparse.Namespace) -> int:
    """Exit 0 when everything is in the destination, 1 when a conflict or a corrupt artifact
    was reported. A restore leaves out live state and the run index, then rebuilds the index
    of every experiment it restored from the restored run folders."""
    from ..store import open_store
    from ..store.layout import parse_run_key
    from ..store.mirror import mirror, restore_skips

    store = store_from_args(args, existing=args.direction == "backup")
    other = open_store(args.other, s3_endpoint=args.s3_endpoint)
    restore = args.direction == "restore"
    source, destination = (other, store) if restore else (store, other)
    report = mirror(source, destination, args.prefix, skip=restore_skips if restore else None)
    extra = "".join(f", {len(keys)} {what}" for keys, what in (
        (report.vanished, "vanished while copying (deleted by the live source)"),
        (report.skipped, "left out (leases, inner checkpoints, the run index)"),
        (report.kept, "newer pointer(s) kept")) if keys)
    print(f"{args.direction} {source.uri} -> {destination.uri}: {len(report.copied)} copied, "
          f"{len(report.unchanged)} already there{extra}")
    for key in report.vanished:
        print(f"  vanished before it was read (compacted, released or superseded), skipped: "
              f"{key}")
    for key in report.kept:
        print(f"  kept the destination's pointer to a run that finished later: {key}")
    for key in report.conflicts:
        print(f"  conflict (different bytes already there, left as is): {key}", file=sys.stderr)
    for key in report.corrupt:
        print(f"  corrupt in the source (sha256 mismatch, not copied): {key}", file=sys.stderr)
    if restore:
        from ..tracking.reindex import reindex

        experiments = sorted({parsed[0] for key in report.copied + report.unchanged
                              if (parsed := parse_run_key(key))})
        runs = 0
        for experiment in experiments:
            result = reindex(destination, experiment)
            runs += result.runs
            for problem in result.problems:
                print(f"fdshpo: warning: {problem}", file=sys.stderr)
        print(f"rebuilt the run index of {len(experiments)} experiment(s) ({runs} run(s)) "
              "from the restored run folders")
    return 0 if report.ok else 1


def serve_command(args: argparse.Namespace) -> int:
    from ..store.server import SeaweedServer

    temp = None
    if args.dir is None:
        temp = tempfile.TemporaryDirectory(prefix="fdshpo-s3-")
        data_dir = Path(temp.name)
    else:
        data_dir = args.dir.expanduser().resolve()
    server = SeaweedServer(data_dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.start()
        server.create_bucket(args.bucket)
        print(f"S3 server on {server.endpoint} (data in {data_dir}); use it with:\n")
        for name, value in server.environment().items():
            print(f"export {name}={shlex.quote(value)}")
        print(f"export FDSHPO_STORE=s3://{args.bucket}\n")
        print("Press Ctrl-C to stop.", flush=True)
        status = server.process.wait()  # until Ctrl-C / SIGTERM, or the server dies
        print(f"the S3 server exited with status {status}; see {data_dir / 'weed.log'}",
              file=sys.stderr)
        return 1
    except (KeyboardInterrupt, SystemExit):
        print("S3 server stopped.")
        return 0
    finally:
        server.stop()
        if temp is not None:
            temp.cleanup()
