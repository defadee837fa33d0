"""CLI verbs over the HTTP API: `sensord alerts …`, `sensord silences …`."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sensord.errors import ConfigError
from sensord.ops.config import default_config_path, load_settings
from sensord.ops.settings import parse_duration


class ApiError(Exception):
    pass


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", type=Path, help="read [http] from this config")
        p.add_argument("--url", help="sensord's HTTP base URL (default: from the config)")
        p.add_argument("--token-file", type=Path, help="default: [http] token_file")
        p.add_argument("--json", action="store_true", help="print JSON")

    alerts = sub.add_parser("alerts", help="list active alerts; `alerts ack FP` acknowledges")
    alerts_sub = alerts.add_subparsers(dest="alerts_command", metavar="[ack]")
    common(alerts)
    alerts.add_argument("--severity", action="append", help="filter (repeatable)")
    alerts.add_argument("--site", help="filter")
    ack = alerts_sub.add_parser("ack", help="acknowledge: no repeats until it resolves")
    common(ack)
    ack.add_argument("fingerprint")
    ack.add_argument("--comment", default="")
    ack.add_argument("--by", default=None, help="who (default: $USER)")

    silences = sub.add_parser("silences", help="manage silences")
    s_sub = silences.add_subparsers(dest="silences_command", required=True, metavar="VERB")
    add = s_sub.add_parser("add", help="silence alerts matching all MATCHERs")
    common(add)
    add.add_argument("matchers", nargs="+", metavar="MATCHER", help="site=plant-1, device=~t-.*")
    add.add_argument("--for", dest="duration", default="1h", help="duration (default 1h)")
    add.add_argument("--comment", default="")
    add.add_argument("--author", default=None, help="who (default: $USER)")
    lst = s_sub.add_parser("list", help="list silences")
    common(lst)
    expire = s_sub.add_parser("expire", help="end a silence now")
    common(expire)
    expire.add_argument("id")


def _who(given: str | None) -> str:
    import getpass  # noqa: PLC0415

    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _endpoint(args: argparse.Namespace) -> tuple[str, str | None]:
    url, token_file = args.url, args.token_file
    if url is None or token_file is None:
        settings = load_settings(args.config or default_config_path())
        if url is None:
            if not settings.http.listen:
                raise ApiError("[http] listen is disabled in the config; pass --url")
            url = f"http://{settings.http.listen}"
        token_file = token_file or settings.http.token_file
    token = token_file.read_text(encoding="utf-8").strip() if token_file else None
    return url.rstrip("/"), token


def _call(base: str, method: str, path: str, token: str | None = None, body: object = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)  # noqa: S310
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - our own API
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise ApiError(f"{method} {path}: HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ApiError(f"cannot reach sensord at {base}: {getattr(exc, 'reason', exc)}") from None


def _when(epoch: float | str | None) -> str:
    if epoch is None:
        return "-"
    if isinstance(epoch, str):
        epoch = datetime.fromisoformat(epoch).timestamp()
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def cmd_alerts(args: argparse.Namespace) -> int:
    base, token = _endpoint(args)
    if args.alerts_command == "ack":
        res = _call(
            base,
            "POST",
            f"/api/v1/alerts/{args.fingerprint}/ack",
            token,
            {"by": _who(args.by), "comment": args.comment},
        )
        print(json.dumps(res) if args.json else f"acknowledged {args.fingerprint}")
        return 0
    query = "&".join(
        [f"severity={s}" for s in args.severity or []]
        + ([f"site={args.site}"] if args.site else [])
    )
    res = _call(base, "GET", "/api/v1/alerts" + (f"?{query}" if query else ""))
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    rows = []
    for a in res["alerts"]:
        labels = a["labels"]
        state = a["state"] + (" acked" if a["acked_by"] else "")
        rows.append(
            [
                a["fingerprint"],
                a["severity"],
                a["rule"],
                f"{labels.get('site', '?')}/{labels.get('device', '?')}",
                "n/a" if a["value"] is None else f"{a['value']:g}",
                _when(a["starts_at"]),
                state,
            ]
        )
    if not rows:
        print("no active alerts")
        return 0
    print(_table(rows, ["FINGERPRINT", "SEVERITY", "RULE", "SENSOR", "VALUE", "SINCE", "STATE"]))
    return 0


def cmd_silences(args: argparse.Namespace) -> int:
    base, token = _endpoint(args)
    if args.silences_command == "add":
        try:
            seconds = parse_duration(args.duration)
        except ValueError as exc:
            raise ApiError(f"--for: {exc}") from None
        res = _call(
            base,
            "POST",
            "/api/v1/silences",
            token,
            {
                "matchers": args.matchers,
                "duration": seconds,
                "author": _who(args.author),
                "comment": args.comment,
            },
        )
        print(
            json.dumps(res)
            if args.json
            else f"silence {res['id']} until {_when(res['ends_at'])}: {' '.join(res['matchers'])}"
        )
        return 0
    if args.silences_command == "expire":
        res = _call(base, "DELETE", f"/api/v1/silences/{args.id}", token)
        print(json.dumps(res) if args.json else f"expired {args.id}")
        return 0
    res = _call(base, "GET", "/api/v1/silences")
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    rows = [
        [
            s["id"],
            s["state"],
            " ".join(s["matchers"]),
            _when(s["starts_at"]),
            _when(s["ends_at"]),
            s["author"],
            s["comment"],
        ]
        for s in res["silences"]
    ]
    if not rows:
        print("no silences")
        return 0
    print(_table(rows, ["ID", "STATE", "MATCHERS", "STARTS", "ENDS", "AUTHOR", "COMMENT"]))
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return cmd_alerts(args) if args.command == "alerts" else cmd_silences(args)
    except ConfigError as exc:
        for p in exc.problems:
            print(p, file=sys.stderr)
        return 1
    except ApiError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1
