"""The ``budbringer`` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.errors import BudbringerError, ConfigError
from gateway.logs import configure
from gateway.settings import Settings, load_settings


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    config = getattr(args, "config", None)
    try:
        return load_settings(Path(config) if config else None, **overrides)
    except ValidationError as exc:
        rows = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"invalid settings: {rows}") from exc


async def _serve(settings: Settings, *, api: bool, workers: bool) -> None:
    from gateway.service import Service, run_until_signalled

    await run_until_signalled(Service(settings, api=api, workers=workers))


async def _tenants_create(settings: Settings, name: str) -> None:
    from gateway.auth import create_tenant
    from gateway.clock import SystemClock
    from gateway.store import open_store

    store = open_store(settings.store_url)
    await store.open()
    try:
        tenant, api_key, whsec = await create_tenant(store, name, SystemClock().now())
    finally:
        await store.close()
    print(f"tenant id:       {tenant.id}")
    print(f"api key:         {api_key}")
    print(f"signing secret:  {whsec}")
    print("Store both now: they are shown only this once (only a hash of the key is kept).")


async def _tenants_list(settings: Settings) -> None:
    from gateway.store import open_store

    store = open_store(settings.store_url)
    await store.open()
    try:
        for tenant in await store.list_tenants():
            print(f"{tenant.id}\t{tenant.name}\t{tenant.created_at.isoformat()}")
    finally:
        await store.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="budbringer", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="FILE", help="a TOML settings file")
        return p

    serve = with_config(sub.add_parser("serve", help="run the HTTP API and the workers"))
    serve.add_argument("--no-workers", action="store_true", help="API only")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    with_config(sub.add_parser("worker", help="run the workers only"))

    tenants = sub.add_parser("tenants", help="manage tenants")
    tsub = tenants.add_subparsers(dest="tenants_command", required=True)
    create = with_config(tsub.add_parser("create", help="create a tenant; prints its keys once"))
    create.add_argument("name")
    with_config(tsub.add_parser("list", help="list tenants"))

    demo = sub.add_parser("demo", help="run the demo municipality end to end")
    demo.add_argument("--dir", default="demo", help="where the demo keeps its files")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
            settings = _settings(args, **overrides)
            configure(settings.log_level)
            asyncio.run(_serve(settings, api=True, workers=not args.no_workers))
        elif args.command == "worker":
            settings = _settings(args)
            configure(settings.log_level)
            asyncio.run(_serve(settings, api=False, workers=True))
        elif args.command == "tenants":
            settings = _settings(args)
            if args.tenants_command == "create":
                asyncio.run(_tenants_create(settings, args.name))
            else:
                asyncio.run(_tenants_list(settings))
        elif args.command == "demo":
            from gateway.demo import run_demo

            return asyncio.run(run_demo(Path(args.dir)))
    except BudbringerError as exc:
        print(f"budbringer: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
