"""calibkit.cli.serve and calibkit.cli.keys: the server's flags and the keys file."""

from __future__ import annotations


from calibkit import cli

from cli_tools import one_line_error


def test_revoking_an_unknown_key_is_one_line(capsys, tmp_path) -> None:
    keys = tmp_path / "keys.json"
    assert cli.main(["keys", "create", "--keys-file", str(keys)]) == 0
    capsys.readouterr()
    assert "no key with id 'nope'" in one_line_error(capsys, ["keys", "revoke", "nope", "--keys-file", str(keys)])


def test_serve_help_describes_each_limit() -> None:
    help_text = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["serve"].format_help().split())
    assert "ServerConfig" not in help_text
    assert "--queue-size N requests waiting for the worker; one more is 503" in help_text
