"""``fdshpo data list|prepare|upload``: datasets by name, prepared bundles, store uploads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="list, prepare or upload datasets")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="the registered dataset names")
    listing.set_defaults(func=run_list)

    prepare = sub.add_parser(
        "prepare", help="write a checksummed tensor bundle with a fixed validation split")
    prepare.add_argument("name", help="dataset name (see `fdshpo data list`)")
    prepare.add_argument("-o", "--output", required=True, type=Path, help="bundle file to write")
    prepare.add_argument("--val-fraction", type=float, default=0.05, metavar="F",
                         help="share of the training set held out for validation (default "
                              "0.05)")
    prepare.add_argument("--split-seed", type=int, default=0, metavar="S",
                         help="seed of the train/validation split (default 0)")
    add_source_arguments(prepare)
    prepare.set_defaults(func=run_prepare)

    upload = sub.add_parser("upload", help="copy a dataset folder to a store prefix")
    upload.add_argument("folder", type=Path, help="folder holding the dataset's files")
    upload.add_argument("--store", required=True, help="store URI (path, file://, s3://)")
    upload.add_argument("--prefix", required=True, help="key prefix, e.g. datasets/cifar10")
    upload.add_argument("--s3-endpoint", default=None, metavar="URL",
                        help="S3 endpoint for an s3:// store (default $AWS_ENDPOINT_URL)")
    upload.set_defaults(func=run_upload)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--data-root, --data-path, --data-store, --data-store-prefix, --s3-endpoint, --download."""
    parser.add_argument("--data-root", default=None, help="data root (default "
                        "$FDSHPO_DATA_ROOT or ~/.cache/fdshpo/datasets)")
    parser.add_argument("--data-path", default=None, help="folder holding the dataset's files")
    parser.add_argument("--data-store", default=None, help="store URI holding the files")
    parser.add_argument("--data-store-prefix", default=None,
                        help="key prefix in the store (default datasets/NAME)")
    parser.add_argument("--s3-endpoint", default=None, metavar="URL",
                        help="S3 endpoint for an s3:// --data-store (default $AWS_ENDPOINT_URL)")
    parser.add_argument("--download", action="store_true",
                        help="let torchvision download the dataset (needs internet)")


def source_options(args: argparse.Namespace) -> dict:
    return {"root": args.data_root, "path": args.data_path, "store": args.data_store,
            "store_prefix": args.data_store_prefix, "s3_endpoint": args.s3_endpoint,
            "download": args.download}


def run_list(args: argparse.Namespace) -> None:
    from ..data import known_datasets

    print("\n".join(known_datasets()))


def run_prepare(args: argparse.Namespace) -> None:
    from ..data import prepare_dataset

    prepared = prepare_dataset(args.name, args.output, val_fraction=args.val_fraction,
                               split_seed=args.split_seed, **source_options(args))
    print(json.dumps({"path": str(prepared.path), "sha256": prepared.sha256, **prepared.meta},
                     indent=2))


def run_upload(args: argparse.Namespace) -> None:
    from ..errors import UserError
    from ..store import open_store

    if not args.folder.is_dir():
        raise UserError(f"{args.folder} is not a folder; give the folder holding the files")
    store = open_store(args.store, s3_endpoint=args.s3_endpoint)
    prefix = args.prefix.strip("/")
    files = sorted(p for p in args.folder.rglob("*") if p.is_file())
    for path in files:
        store.put_file(f"{prefix}/{path.relative_to(args.folder).as_posix()}", path,
                       overwrite=True)
    print(f"uploaded {len(files)} files to {store.uri} under {prefix}/")
