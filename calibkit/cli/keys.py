"""``calibkit keys``: create, list and revoke the API keys ``calibkit serve`` accepts."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keys",
        help="create, list and revoke the API keys calibkit serve accepts",
        description="Manage a keys file for calibkit serve --keys-file. The file stores only salted "
        "hashes; create prints the new key once, alone on its last line of output.",
        epilog="example: calibkit keys create --keys-file keys.json --name alice",
    )
    ks = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = ks.add_parser("create", help="make a new key and print it once")
    c.add_argument("--name", default="", help="a note to recognise the key by")
    ks.add_parser("list", help="list the keys' ids, names and creation times")
    r = ks.add_parser("revoke", help="remove a key by id; the server stops accepting it at once")
    r.add_argument("id", help="the key's id, as calibkit keys list shows it")
    for q in (c, ks.choices["list"], r):
        q.add_argument("--keys-file", required=True, metavar="PATH", help="the keys file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..server.keys import create_key, list_keys, revoke_key

    if args.action == "create":
        key, entry = create_key(args.keys_file, name=args.name)
        print(f"created key {entry['id']} in {args.keys_file}; it is shown once, here:")
        print(key)
    elif args.action == "list":
        entries = list_keys(args.keys_file)
        for e in entries:
            print(f"{e['id']}  {e.get('created', '')}  {e.get('name', '')}")
        if not entries:
            print(f"no keys in {args.keys_file}; make one with: calibkit keys create --keys-file {args.keys_file}")
    else:
        try:
            e = revoke_key(args.keys_file, args.id)
        except KeyError as err:  # no key with that id: a user error, said in its own words
            raise ValueError(err.args[0] if err.args else f"no key with id {args.id!r}") from None
        print(f"revoked {e['id']} ({e.get('name', '')})")
    return 0
