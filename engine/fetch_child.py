"""What a download's child process (`git`, or `engine.hf_fetch`) is given, and what it is not.

The child gets a minimal environment built here, never the server's: the server's environment holds its secrets
(`LLMWS_SECRET_KEY`, database passwords, cloud keys) and a fetch runs code and talks to hosts an admin typed in.
It keeps PATH, the locale, proxy and CA settings (a fetch behind a proxy must still work), and gets a HOME of its
own, so no user's git configuration, credential helper or saved Hugging Face token is used.

Credentials written into a git URL (`https://user:token@host/repo.git`) are taken out of it at once: the URL that
is logged, stored and shown has none, and git receives them through a credential helper reading this child's
environment (not its command line, which other users of the machine can read), for that host only.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

GIT_SCHEMES = ("https", "http", "file")
PASSED_ON = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY",
             "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO", "REQUESTS_CA_BUNDLE")
URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
# Answers git's `get` with the child's credentials when git asks about the URL's own host; nothing otherwise
# (a redirect to another host must not receive them).
CREDENTIAL_HELPER = ('!f() { test "$1" = get || exit 0; ok=; while read -r line; do '
                     'test "$line" = "host=$DOWNLOAD_GIT_HOST" && ok=1; done; test -n "$ok" || exit 0; '
                     "printf 'username=%s\\npassword=%s\\n' "
                     '"$DOWNLOAD_GIT_USERNAME" "$DOWNLOAD_GIT_PASSWORD"; }; f')
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class GitCredentials:
    host: str  # host[:port], as git names it to a credential helper
    username: str = field(repr=False)
    password: str = field(repr=False)

    def redact(self, text: str) -> str:
        """``text`` with the secret replaced, in case a fetcher echoes it back."""
        secret = self.password or self.username
        return text.replace(secret, "***") if secret else text


def split_credentials(url: str) -> tuple[str, GitCredentials | None]:
    """The URL without its userinfo, and the credentials it carried (None when it carried none)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    username, _, password = userinfo.partition(":")
    credentials = GitCredentials(host, unquote(username), unquote(password))
    return urlunsplit(parts._replace(netloc=host)), credentials


def redact_urls(text: str) -> str:
    """Any ``scheme://userinfo@`` in ``text`` with the userinfo hidden."""
    return URL_USERINFO.sub(r"\1***@", text)


def child_environment(home: Path, *, hf_token: str | None = None,
                      git_credentials: GitCredentials | None = None) -> dict[str, str]:
    """The whole environment of a fetcher child, with ``home`` (a private, empty folder) as its HOME."""
    home.mkdir(parents=True, exist_ok=True)
    env = {name: os.environ[name] for name in PASSED_ON if name in os.environ}
    # A mirror and the hub client's own switches (timeouts, transfer backends) are not secrets; tokens are.
    env |= {name: value for name, value in os.environ.items()
            if (name == "HF_ENDPOINT" or name.startswith("HF_HUB_")) and "TOKEN" not in name}
    env |= {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "PYTHONPATH": str(PROJECT_ROOT),
            "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_ALLOW_PROTOCOL": ":".join(GIT_SCHEMES)}
    if hf_token:
        env["HF_TOKEN"] = hf_token  # in the environment, never on a command line others can read
    config: dict[str, str] = {}
    if shutil.which("git-lfs", path=env.get("PATH")):
        # What `git lfs install` would write into the HOME this child does not share.
        config |= {"filter.lfs.process": "git-lfs filter-process", "filter.lfs.required": "true",
                   "filter.lfs.smudge": "git-lfs smudge -- %f", "filter.lfs.clean": "git-lfs clean -- %f"}
    if git_credentials is not None:
        config["credential.helper"] = CREDENTIAL_HELPER
        env |= {"DOWNLOAD_GIT_HOST": git_credentials.host, "DOWNLOAD_GIT_USERNAME": git_credentials.username,
                "DOWNLOAD_GIT_PASSWORD": git_credentials.password}
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for index, (key, value) in enumerate(config.items()):
        env[f"GIT_CONFIG_KEY_{index}"], env[f"GIT_CONFIG_VALUE_{index}"] = key, value
    return env
